# The neural stages 10-17 of a recipe, sourced by its run.sh after stages 0-9 (the GMM systems,
# their alignments and HCLGs). nnet_gmm (default tri) names the GMM whose tree, alignments
# (the senone targets and priors) and HCLG the neural stages use. The recipe sets: stage,
# stop_stage, nj, device, nnet_config, subset_config (section 6's models), subset_percent, grid
# (decode's LM-weight / penalty options), the data sets train_set, tune_set (LR schedule,
# decoding weights, model choice), test_set, and their alignment dirs train_ali, tune_ali,
# test_ali. It may set
#   section6=false (default true): leave out stage 13 (section 6's subset models);
#   beyond_paper=false (default true): leave out what goes beyond the paper: stage 14 (teacher
#     switching and the student of the members run on mixed-up windows), stage 13's subset
#     model of mixed-up windows and stage 11's per-member soft targets;
#   speed_perturb=true (default false): train the networks on train_set and its copies at
#     speeds 0.9 and 1.1 (<train_set>_sp, aligned by the GMM in stage 10; section 6's subset
#     is drawn from it too);
#   nnet_affix=_<name> (default none): the neural stages write exp/nnet_<name> and
#     exp/compare_<name> instead of exp/nnet and exp/compare (Kaldi's affix), e.g. for a
#     second --nnet-config beside the first;
#   nnet_feats=fmllr (default fbank): give the networks the SAT GMM's speaker-adapted features
#     instead of fbank (data/fmllr_<gmm>/<set>, Kaldi's data-fmllr-tri3b: train through its
#     alignment's transforms, tune and test through their first decoding pass's).
# Models of those stages left by an earlier run are still measured and decoded.
beyond_paper=${beyond_paper:-true}
section6=${section6:-true}
gmm=${nnet_gmm:-tri}
nnet_dir=exp/nnet${nnet_affix:-} compare_dir=exp/compare${nnet_affix:-}
case ${speed_perturb:=false} in
  true) sp_src=$train_set train_set=${train_set}_sp train_ali=exp/${gmm}_ali_sp  # the networks' training set
        sp_text=" ($sp_src at speeds 0.9, 1.0, 1.1)" ;;
  false) sp_text= ;;
  *) echo "$0: --speed-perturb must be true or false, got '$speed_perturb'" >&2; exit 1 ;;
esac
if [ $stop_stage -ge 10 ] && [ ! -f exp/$gmm/tree ]; then
  echo "$0: --nnet-gmm $gmm: exp/$gmm/tree missing (train it in stages 4-7)" >&2; exit 1
fi
case ${nnet_feats:=fbank} in
  fbank) nnet_data=data feats_text=fbank ;;
  fmllr) nnet_data=data/fmllr_$gmm feats_text="$gmm's fMLLR features"
         if [ $stop_stage -ge 10 ] && [ ! -f exp/$gmm/final.alimdl ]; then
           echo "$0: --nnet-feats fmllr: the networks' GMM $gmm is not speaker-adapted (give --sat true and" \
             "--nnet-gmm tri3, or --nnet-feats fbank)" >&2; exit 1
         fi ;;
  *) echo "$0: --nnet-feats must be fbank or fmllr, got '$nnet_feats'" >&2; exit 1 ;;
esac
for o in beyond-paper:$beyond_paper section6:$section6; do
  case ${o#*:} in
    true|false) ;;
    *) echo "$0: --${o%%:*} must be true or false, got '${o#*:}'" >&2; exit 1 ;;
  esac
done
# optional_stage N OPTION: true when the optional stage N is to run (OPTION=true); otherwise says
# it is skipped.
optional_stage() {
  [ "${!2}" = true ] && return 0
  echo "stage $1: skipped ($2=false)"
  return 1
}
# planned DIR: true when the model DIR is trained by this run's options (stages 13-14 are
# optional) or was left by an earlier run, i.e. when stages 15-16 are to measure it.
planned() {
  [ -d "$1" ] && return 0
  case ${1##*/} in
    subset_hard|subset_soft) [ "$section6" = true ] ;;
    subset_mixup) [ "$section6" = true ] && [ "$beyond_paper" = true ] ;;
    switched|student_mixup) [ "$beyond_paper" = true ] ;;
    *) return 0 ;;
  esac
}
subset=$nnet_data/${train_set}_${subset_percent}pct
nnet_opts="--config $nnet_config --device $device"
ali_sets="$nnet_data/$train_set $train_ali $nnet_data/$tune_set $tune_ali"
if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  begin_stage 10 "ensemble of senone DNNs on $feats_text and the $gmm alignment of $train_set$sp_text (member 0 is the baseline)"
  if [ "$speed_perturb" = true ]; then
    run_log exp/log/perturb_speed.log asrkd perturb-speed data/$sp_src data/$train_set
    run_log exp/log/make_fbank_$train_set.log asrkd compute-fbank --config "${fbank_config:-conf/fbank.yaml}" \
      --nj $nj $cmd_opts data/$train_set
    run_log exp/log/compute_cmvn_$train_set.log asrkd compute-cmvn-stats --nj $nj $cmd_opts data/$train_set
    run_log $train_ali/log/align.log asrkd align --nj $nj $cmd_opts data/$train_set data/lang exp/$gmm $train_ali
  fi
  if [ "$nnet_feats" = fmllr ]; then
    fmllr_sets=$train_set:$train_ali   # and each other set through its first decoding pass's transforms
    for s in $tune_set $test_set; do
      case " $fmllr_sets " in *" $s:"*) ;; *) fmllr_sets+=" $s:exp/$gmm/decode_$s.fmllr" ;; esac
    done
    for s in $fmllr_sets; do
      run_log exp/log/make_fmllr_feats_${s%%:*}.log asrkd make-fmllr-feats --nj $nj $cmd_opts --transform-dir ${s#*:} \
        data/${s%%:*} exp/$gmm $nnet_data/${s%%:*}
      run_log exp/log/compute_cmvn_fmllr_${s%%:*}.log asrkd compute-cmvn-stats $nnet_data/${s%%:*}
    done
  fi
  run_log $nnet_dir/log/train_ensemble.log asrkd train-ensemble $nnet_opts $cmd_opts $ali_sets $nnet_dir
fi
members=$(for m in $nnet_dir/member_*; do if [ -d $m ]; then echo -n "--nnet $m "; fi; done)
temperatures=$(python -c "import sys, yaml; print(*('%g' % t for t in yaml.safe_load(open(sys.argv[1]))['temperatures']))" $nnet_config)
switch_t=$(config_value $nnet_config temperature)   # each member's own soft targets at this T
per_member="--per-member $switch_t" per_member_text=", and each member's at T=$switch_t"
if [ "$beyond_paper" != true ]; then per_member= per_member_text=; fi

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  begin_stage 11 "soft targets on train: members' averaged softmax(z/T) for T in $temperatures$per_member_text"
  run_log $nnet_dir/log/make_soft_targets.log asrkd make-soft-targets --config $nnet_config $per_member \
    --nj $nj $cmd_opts $members $nnet_data/$train_set $nnet_dir
fi

if [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  begin_stage 12 "temperature sweep: a student per T in $temperatures; $nnet_dir/distilled links the best on $tune_set"
  jobs=()   # a job per student: one after another locally, an array on Slurm
  for t in $temperatures; do
    jobs+=(--job $nnet_dir/student_T$t/log/run.log \
      "asrkd train-dnn --soft-targets $nnet_dir/soft_T$t $nnet_opts $ali_sets $nnet_dir/student_T$t")
  done
  asrkd run-jobs --kind train $cmd_opts "${jobs[@]}" $nnet_dir/log/sweep
  run_log $nnet_dir/log/select_student.log asrkd select-model --link $nnet_dir/distilled \
    $(for t in $temperatures; do echo $nnet_dir/student_T$t; done)
fi

if [ $stage -le 13 ] && [ $stop_stage -ge 13 ] && optional_stage 13 section6; then
  mixup_text=; [ "$beyond_paper" != true ] || mixup_text=", and the ensemble run on mixed-up windows"
  begin_stage 13 "soft targets as a regulariser (paper section 6): ${subset_percent}% of train, hard vs soft targets$mixup_text"
  # each skips itself when done from the same training features, and is redone with them
  asrkd subset-data-dir --frame-fraction $(python -c "print($subset_percent / 100)") --seed 0 $nnet_data/$train_set $subset
  asrkd compute-cmvn-stats $subset
  sub_sets="$subset $train_ali $nnet_data/$tune_set $tune_ali"
  run_log $nnet_dir/subset_hard/log/run.log asrkd train-dnn --config $subset_config --device $device \
    $sub_sets $nnet_dir/subset_hard
  run_log $nnet_dir/subset_soft/log/run.log asrkd train-dnn --config $subset_config --device $device \
    --soft-targets $nnet_dir/soft_T$(chosen_temperature) $sub_sets $nnet_dir/subset_soft
  if [ "$beyond_paper" = true ]; then  # the members run on each minibatch of mixed-up windows (function matching)
    run_log $nnet_dir/subset_mixup/log/run.log asrkd train-dnn --config $subset_config --device $device \
      --temperature $(chosen_temperature) $(for m in $nnet_dir/member_*; do echo "--teacher-nnet $m"; done) \
      $sub_sets $nnet_dir/subset_mixup
  fi
fi

if [ $stage -le 14 ] && [ $stop_stage -ge 14 ] && optional_stage 14 beyond_paper; then
  begin_stage 14 "beyond the paper: teacher switching (Fukuda et al. 2017), and the members run on mixed-up windows of all of train"
  if [ ! -d $nnet_dir/soft_T${switch_t}_member_0 ]; then
    echo "$0: stage 14: no per-member soft targets $nnet_dir/soft_T${switch_t}_member_*: run stage 11 with --beyond-paper true" >&2
    exit 1
  fi
  run_log $nnet_dir/switched/log/run.log asrkd train-dnn $nnet_opts $ali_sets $nnet_dir/switched \
    $(for m in $nnet_dir/soft_T${switch_t}_member_*; do echo "--soft-targets $m"; done)
  run_log $nnet_dir/student_mixup/log/run.log asrkd train-dnn $nnet_opts --temperature $(chosen_temperature) \
    $(for m in $nnet_dir/member_*; do echo "--teacher-nnet $m"; done) $ali_sets $nnet_dir/student_mixup
fi
students=$(for d in $nnet_dir/student_* $nnet_dir/switched $nnet_dir/subset_*; do if [ -d $d ]; then echo $d; fi; done)

if [ $stage -le 15 ] && [ $stop_stage -ge 15 ]; then
  begin_stage 15 "frame accuracy on $tune_set and $test_set (senone and phone level): GMM, members, ensembles, students"
  jobs=()   # a job per model and set: one after another locally (each on $threads threads), an array on Slurm
  for s in $tune_set:$tune_ali $test_set:$test_ali; do
    ali=${s#*:} s=${s%%:*}
    fa_args="$nnet_data/$s $ali"
    sat_opt=; [ ! -f $ali/trans.ark ] || sat_opt="--transform-dir $ali"  # a SAT GMM's speakers
    jobs+=(--job exp/$gmm/log/frame_accuracy_$s.log "asrkd frame-accuracy --model-dir exp/$gmm $sat_opt \
      --priors $train_ali data/$s $ali exp/$gmm/frame_accuracy_$s.json")
    jobs+=(--job $nnet_dir/ensemble/log/frame_accuracy_$s.log "asrkd frame-accuracy $members --per-member \
      --priors $train_ali $fa_args $nnet_dir/ensemble/frame_accuracy_$s.json")
    for d in $students; do
      jobs+=(--job $d/log/frame_accuracy_$s.log "asrkd frame-accuracy --nnet $d --priors $train_ali $fa_args \
        $d/frame_accuracy_$s.json")
    done
  done
  # training-set accuracy for the section-6 table: each model on the data it was trained on
  for d in $nnet_dir/member_0:$nnet_data/$train_set $nnet_dir/subset_hard:$subset $nnet_dir/subset_soft:$subset \
           $nnet_dir/subset_mixup:$subset; do
    planned ${d%%:*} || continue
    jobs+=(--job ${d%%:*}/log/frame_accuracy_train.log "asrkd frame-accuracy --nnet ${d%%:*} --priors $train_ali \
      ${d#*:} $train_ali ${d%%:*}/frame_accuracy_train.json")
  done
  asrkd run-jobs $cmd_opts "${jobs[@]}" $nnet_dir/log/frame_accuracy
fi

if [ $stage -le 16 ] && [ $stop_stage -ge 16 ]; then
  begin_stage 16 "hybrid decoding with the $gmm HCLG: baseline, ensemble, chosen student, mixed-up teachers' student (weights chosen on $tune_set), other students"
  decode_tuned $nnet_dir/member_0 exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj --nnet $nnet_dir/member_0 --priors $train_ali $grid
  decode_tuned $nnet_dir/ensemble exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj $members --priors $train_ali $grid
  decode_tuned $nnet_dir/distilled exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj --nnet $nnet_dir/distilled --priors $train_ali $grid
  if [ -d $nnet_dir/student_mixup ]; then
    decode_tuned $nnet_dir/student_mixup exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj --nnet $nnet_dir/student_mixup \
      --priors $train_ali $grid
  fi
  # the other students of the sweep and teacher switching: one pass per set at the chosen student's
  # weights, a job each (--nj at a time locally, an array on Slurm)
  jobs=()
  for d in $nnet_dir/student_T* $nnet_dir/switched; do
    planned $d || continue
    [ "$(readlink -f $d)" = "$(readlink -f $nnet_dir/distilled)" ] && continue
    if [ ! -f $d/final.pt ]; then echo "stage 16: $d not trained (stage 12 or 14), not decoded"; continue; fi
    for s in $tune_set $test_set; do
      jobs+=(--job $d/decode_$s/log/run.log "asrkd decode --tuned-on $nnet_dir/distilled/decode_$tune_set \
        --nnet $d --priors $train_ali exp/$gmm/graph $nnet_data/$s $d/decode_$s")
    done
  done
  [ ${#jobs[@]} -eq 0 ] || asrkd run-jobs --nj $nj $cmd_opts "${jobs[@]}" $nnet_dir/log/decode_students
  grep -sH WER exp/$gmm/decode_*/wer $nnet_dir/*/decode_*/wer || true   # the GMM's need stage 9
fi

if [ $stage -le 17 ] && [ $stop_stage -ge 17 ]; then
  begin_stage 17 "comparison tables and plots -> $compare_dir/results.md"
  run_log $compare_dir/log/compare.log asrkd compare --gmm exp/$gmm --nnet $nnet_dir --sets $tune_set,$test_set --data data \
    --stage-times exp/log/stage_times.tsv $compare_dir
fi
