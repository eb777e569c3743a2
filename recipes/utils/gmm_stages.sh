# The GMM stages 4-9 of a recipe, sourced by its run.sh after stages 0-3 (data, lang, LM,
# features): monophone and triphone GMM-HMMs, the alignments whose senones are the neural
# stages' targets, HCLG graphs and GMM decoding. The recipe sets: stage, stop_stage, nj,
# sets (its data sets), train_set, tune_set (chooses the LM weight and penalty), test_set,
# mono_gauss, num_leaves, tri_gauss, tree_opts, lm_weights and word_ins_penalties (the grid).
# Alignments: exp/tri_ali for train_set, exp/tri_ali_<set> for every other set.
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

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  begin_stage 7 "triphone alignments (senone targets for $train_set, references for frame accuracy)"
  run_log exp/tri_ali/log/align.log asrkd align --nj $nj $cmd_opts data/$train_set data/lang exp/tri exp/tri_ali
  for s in $sets; do
    [ "$s" != "$train_set" ] && [ -d data/$s ] || continue
    run_log exp/tri_ali_$s/log/align.log asrkd align --nj $nj $cmd_opts data/$s data/lang exp/tri exp/tri_ali_$s
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  begin_stage 8 "decoding graphs HCLG for mono and tri"
  for m in mono tri; do
    run_log exp/$m/graph/log/mkgraph.log asrkd make-graph data/lang_test exp/$m exp/$m/graph
  done
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  begin_stage 9 "GMM decoding: LM weight and insertion penalty chosen on $tune_set, applied to $test_set"
  for m in mono tri; do
    decode_tuned exp/$m exp/$m/graph $tune_set $test_set $nj --model-dir exp/$m \
      --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties
  done
  grep -H WER exp/*/decode_*/wer
fi
