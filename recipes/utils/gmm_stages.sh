# The GMM stages 4-9 of a recipe, sourced by its run.sh after stages 0-3 (data, lang, LM,
# features): monophone and triphone GMM-HMMs, the alignments whose senones are the neural
# stages' targets, HCLG graphs and GMM decoding. The recipe sets: stage, stop_stage, nj,
# sets (its data sets), train_set, tune_set (chooses the LM weight and penalty), test_set,
# mono_gauss, num_leaves, tri_gauss, tree_opts, lm_weights and word_ins_penalties (the grid),
# lda_mllt (true: also tri2, Kaldi's tri2b: LDA+MLLT features, its tree and GMM sized as tri's)
# and sat (true: also tri3, Kaldi's tri3b: speaker-adaptive training with fMLLR on tri2's
# features, sized as tri; aligned and decoded in two passes). Alignments: exp/<gmm>_ali for
# train_set, exp/<gmm>_ali_<set> for every other set. With nnet_gmm=auto, the GMM of the neural
# stages is the triphone system with the lowest WER on tune_set (exp/nnet_gmm.txt says which).
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  begin_stage 4 "monophone GMM-HMM (flat start)"
  run_log exp/mono/log/train.log asrkd train-mono --tot-gauss $mono_gauss data/$train_set data/lang exp/mono
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  begin_stage 5 "monophone alignment of $train_set"
  run_log exp/mono_ali/log/align.log asrkd align --nj $nj $cmd_opts data/$train_set data/lang exp/mono exp/mono_ali
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  begin_stage 6 "decision tree and tied-state triphone GMM-HMM"
  run_log exp/tri/log/train.log asrkd train-tri --num-leaves $num_leaves --tot-gauss $tri_gauss $tree_opts \
    data/$train_set data/lang exp/mono_ali exp/tri
fi

# stage 7 aligns every set with one GMM system: exp/<gmm>_ali for train_set, exp/<gmm>_ali_<set> else
align_sets() {
  local gmm=$1 s
  run_log exp/${gmm}_ali/log/align.log asrkd align --nj $nj $cmd_opts data/$train_set data/lang exp/$gmm exp/${gmm}_ali
  for s in $sets; do
    [ "$s" != "$train_set" ] && [ -d data/$s ] || continue
    run_log exp/${gmm}_ali_$s/log/align.log asrkd align --nj $nj $cmd_opts data/$s data/lang exp/$gmm exp/${gmm}_ali_$s
  done
}

case ${lda_mllt:=false} in
  true) gmm_systems="mono tri tri2" tri2_text="; LDA+MLLT triphones (tri2) from tri's, and their alignments" ;;
  false) gmm_systems="mono tri" tri2_text= ;;
  *) echo "$0: --lda-mllt must be true or false, got '$lda_mllt'" >&2; exit 1 ;;
esac
case ${sat:=false} in
  true) [ "$lda_mllt" = true ] || { echo "$0: --sat true needs --lda-mllt true (SAT starts from tri2)" >&2; exit 1; }
        gmm_systems="$gmm_systems tri3" tri2_text="$tri2_text; SAT triphones (tri3) from tri2's, and their fMLLR alignments" ;;
  false) ;;
  *) echo "$0: --sat must be true or false, got '$sat'" >&2; exit 1 ;;
esac

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  begin_stage 7 "triphone alignments (senone targets for $train_set, references for frame accuracy)$tri2_text"
  align_sets tri
  if [ "$lda_mllt" = true ]; then
    run_log exp/tri2/log/train.log asrkd train-lda-mllt --num-leaves $num_leaves --tot-gauss $tri_gauss $tree_opts \
      data/$train_set data/lang exp/tri_ali exp/tri2
    align_sets tri2
  fi
  if [ "$sat" = true ]; then
    run_log exp/tri3/log/train.log asrkd train-sat --num-leaves $num_leaves --tot-gauss $tri_gauss $tree_opts \
      data/$train_set data/lang exp/tri2_ali exp/tri3
    align_sets tri3
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  begin_stage 8 "decoding graphs HCLG for ${gmm_systems// /, }"
  for m in $gmm_systems; do
    run_log exp/$m/graph/log/mkgraph.log asrkd make-graph data/lang_test exp/$m exp/$m/graph
  done
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  begin_stage 9 "GMM decoding: LM weight and insertion penalty chosen on $tune_set, applied to $test_set"
  for m in $gmm_systems; do
    decode=decode; [ $m = tri3 ] && decode=decode-fmllr   # SAT: speaker-independent pass, fMLLR, adapted pass
    decode_tuned exp/$m exp/$m/graph data/$tune_set data/$test_set $nj --decode $decode --model-dir exp/$m \
      --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties
  done
  grep -H WER exp/*/decode_*/wer
fi

if [ "${nnet_gmm:-tri}" = auto ] && [ $stop_stage -ge 10 ]; then
  nnet_gmm=$(choose_gmm $tune_set ${gmm_systems#mono })
fi
