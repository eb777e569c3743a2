#!/usr/bin/env bash
# Seed spread of the recipe's headline numbers (frame accuracy and WER on the tuning and test
# sets): neural training is not bit-reproducible (bf16, threads), so each number needs a mean
# and standard deviation over seeds before a difference between systems means anything.
#   - baseline: the ensemble's members are its seeds; their frame accuracies are read from
#     stage 15's exp/nnet/ensemble/frame_accuracy_<set>.json, members 1.. are decoded here
#     as stage 16 decodes member 0 (grid on the tuning set, then test at the chosen weights);
#   - ensemble: its leave-one-out ensembles (frame accuracy; WER with --ensemble-wer true);
#   - the chosen student (exp/nnet/distilled), the student from mixed-up teachers and section
#     6's subset models (--subset false leaves them out): the recipe's run (seed 0) plus
#     --seeds, trained with the recipe's options and evaluated as it does.
# Writes everything under --dir (default exp/spread<affix>), never into the recipe's dirs, then
# `asrkd seed-spread` -> <dir>/spread.json: per number the values per seed, mean, std
# (ddof=1), n, and the report's differences with whether each exceeds the spread (95% Welch
# t-interval of the difference excludes 0; see asrkd/spread.py). Resumable: finished
# trainings, decodes and frame accuracies are skipped. Not part of run.sh; run after it:
#   cd recipes/speechocean762 && bash ../../local/seed_spread.sh [--seeds "1 2"] [--nj 2]
#   a second config's models (run.sh --nnet-config C --nnet-affix _<name>): give the same two options
# About 1.3 h on a 2-core x86 CPU with AVX512-BF16. Measured: member decodes 2.8 min each (4),
# 2 students from mixed-up teachers 31 min with their decoding, 2 mixed-up subset models
# 5 min, and --ensemble-wer true's decodes 28 min more; estimated from the recipe's stage
# times: 2 paper students ~9 min + ~8 min decoding, 4 hard/soft subset models ~3 min,
# frame accuracies ~8 min.
# yesno (no dev set, tiny: 7 min on 2 cores, as long as its run.sh; 1.6 min to find all done):
#   cd recipes/yesno && bash ../../local/seed_spread.sh --train-set train_yesno --tune-set train_yesno \
#     --test-set test_yesno --tune-ali exp/tri_ali \
#     --lm-weights 2,5,10 --word-ins-penalties 0,1 --subset-config conf/nnet.yaml --subset-percent 30
set -euo pipefail
OLDPWD=$PWD   # run from the recipe dir: relative --*-config values are from here (path.sh)
. "$(cd "$(dirname "$0")" && pwd)/../recipes/utils/path.sh"

nj=2                         # decoding jobs
cmd=                         # where the decoding jobs run: local or slurm; default: cmd_config's, as run.sh's
cmd_config=conf/cmd.yaml     # cmd, and the Slurm partition, CPUs, memory and time limit of the jobs
threads=0                    # CPU threads of training (0: OMP_NUM_THREADS where set, else nj, at most the cores)
force=false                  # true: redo the extra models, decodes and frame accuracies
seeds="1 2"                  # extra seeds of the students and subset models (the recipe's is 0)
ensemble_wer=false           # true: also decode the leave-one-out ensembles (their WER spread)
subset=true                  # false: leave out section 6's subset models
nnet_affix=                  # the recipe's --nnet-affix, as in its run.sh: its models are in exp/nnet<affix>
dir=                         # where the extra models, decodes and spread.json go (default: exp/spread<affix>)
device=auto                  # training device (auto, cpu, cuda), as run.sh's
nnet_config=conf/nnet.yaml   # the recipe's network config, as in its run.sh
subset_config=conf/nnet_subset.yaml   # its section-6 config
subset_percent=3             # its section-6 share of the training frames
gmm=tri                      # the networks' GMM (run.sh's nnet_gmm as chosen): its graph and alignments
nnet_data=data               # the networks' data dirs: data/fmllr_<gmm> where run.sh had nnet_feats=fmllr
train_set=train              # the recipe's training set, as in its run.sh
tune_set=dev                 # its tuning set (weights, temperature, learning rates)
test_set=test                # its test set
train_ali=                   # the training set's alignment (default: exp/<gmm>_ali)
tune_ali=                    # the tuning set's (default: exp/<gmm>_ali_<tune_set>)
test_ali=                    # the test set's (default: exp/<gmm>_ali_<test_set>)
lm_weights=9,12,15,18,21     # the decoding grid searched on the tuning set, as run.sh's
word_ins_penalties=0,1,2     # and its insertion penalties
. "$asrkd_root/recipes/utils/parse_options.sh"
recipe_setup   # the recipe's lock (not while run.sh runs in this dir), threads, --cmd
: ${dir:=exp/spread$nnet_affix}
nnet_dir=exp/nnet$nnet_affix   # also read by chosen_temperature
: ${train_ali:=exp/${gmm}_ali} ${tune_ali:=exp/${gmm}_ali_$tune_set} ${test_ali:=exp/${gmm}_ali_$test_set}

for f in $nnet_dir/ensemble/frame_accuracy_$tune_set.json $nnet_dir/ensemble/frame_accuracy_$test_set.json \
         $nnet_dir/member_0/decode_$test_set/decode_info.json exp/$gmm/graph/HCLG.fst; do
  [ -f $f ] || { echo "$0: $f missing: run the recipe (stages 10-16) first, from its dir" >&2; exit 1; }
done
grid="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties"
nnet_opts="--config $nnet_config --device $device"
ali_sets="$nnet_data/$train_set $train_ali $nnet_data/$tune_set $tune_ali"
t=$(chosen_temperature)
members=$(ls -d $nnet_dir/member_* | sort -t_ -k2 -n)
teachers=$(for m in $members; do echo "--teacher-nnet $m"; done)

# frame_acc DIR MODEL_OPTS...: DIR/frame_accuracy_<set>.json on the tuning and test sets
frame_acc() {
  local d=$1 s; shift
  for s in $tune_set:$tune_ali $test_set:$test_ali; do
    run_log $d/log/frame_accuracy_${s%%:*}.log asrkd frame-accuracy "$@" --priors $train_ali \
      $nnet_data/${s%%:*} ${s#*:} $d/frame_accuracy_${s%%:*}.json
  done
}
# evaluate DIR: frame accuracy and WER of the model in DIR, as stage 15 and 16 do
evaluate() {
  frame_acc $1 --nnet $1
  decode_tuned $1 exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj --nnet $1 --priors $train_ali $grid
}

echo "$0: baseline: members 1.. decoded as member 0"
for m in $members; do
  [ $m = $nnet_dir/member_0 ] && continue
  decode_tuned $dir/$(basename $m) exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj --nnet $m --priors $train_ali $grid
done

echo "$0: ensemble: leave-one-out ensembles"
for m in $members; do
  d=$dir/ensemble_without_${m##*_}
  others=$(for o in $members; do [ $o = $m ] || echo "--nnet $o"; done)
  frame_acc $d $others
  if [ $ensemble_wer = true ]; then
    decode_tuned $d exp/$gmm/graph $nnet_data/$tune_set $nnet_data/$test_set $nj $others --priors $train_ali $grid
  fi
done

for s in $seeds; do
  echo "$0: seed $s: the chosen student (T=$t) and the student from mixed-up teachers"
  d=$dir/student_T${t}_seed$s
  run_log $d/log/run.log asrkd train-dnn --seed $s --soft-targets $nnet_dir/soft_T$t $nnet_opts $ali_sets $d
  evaluate $d
  if [ -d $nnet_dir/student_mixup ]; then
    d=$dir/student_mixup_seed$s
    run_log $d/log/run.log asrkd train-dnn --seed $s $nnet_opts --temperature $t $teachers $ali_sets $d
    evaluate $d
  fi
done

subset_dir=$nnet_data/${train_set}_${subset_percent}pct
if [ $subset = true ] && ls -d $nnet_dir/subset_* > /dev/null 2>&1; then
  [ -f $subset_dir/cmvn.scp ] || { echo "$0: $subset_dir missing (stage 13; --subset-percent?)" >&2; exit 1; }
  sub_opts="--config $subset_config --device $device $subset_dir $train_ali $nnet_data/$tune_set $tune_ali"
  for s in $seeds; do
    echo "$0: seed $s: section 6's subset models"
    for k in hard soft mixup; do
      [ -d $nnet_dir/subset_$k ] || continue
      case $k in
        hard) opts= ;;
        soft) opts="--soft-targets $nnet_dir/soft_T$t" ;;
        mixup) opts="--temperature $t $teachers" ;;
      esac
      d=$dir/subset_${k}_seed$s
      run_log $d/log/run.log asrkd train-dnn --seed $s $opts $sub_opts $d
      frame_acc $d --nnet $d
    done
  done
fi

run_log $dir/log/seed_spread.log asrkd seed-spread --nnet $nnet_dir --sets $tune_set,$test_set $dir
