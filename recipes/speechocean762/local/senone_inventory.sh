#!/usr/bin/env bash
# The senone-inventory experiment: a second tri system built with other tree options (default:
# silence split by context and no leaf clustering, run.sh's tree before the experiment), its
# alignments, GMM decoding, and a DNN baseline (seed 0) on it, compared with run.sh's exp/tri
# and exp/nnet/member_0 in exp/senones/senones.md. Needs run.sh's stages 0-10.
#   bash recipes/speechocean762/local/senone_inventory.sh [--nj N] [--tree-opts "..."] [--alt exp/tri_alt]
set -euo pipefail
cd "$(dirname "$0")/.."
. ../utils/path.sh

nj=2                          # decoding jobs
num_leaves=1500               # tied triphone states of the second tri system
tri_gauss=8000                # its Gaussians
tree_opts=""                  # its tree options (asrkd train-tri), e.g. "--no-split-silence --cluster-leaves"
alt=exp/tri_alt               # where the second system, its alignments and its DNN go
lm_weights=9,12,15,18,21      # LM weights tuned on dev
word_ins_penalties=0,1,2      # word insertion penalties tuned on dev
nnet_config=conf/nnet.yaml    # config of the DNN baseline on the second system's targets
. ../utils/parse_options.sh

tri=$alt dnn=$alt/nnet/member_0
grid="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties"
run_log $tri/log/train.log asrkd train-tri --num-leaves $num_leaves --tot-gauss $tri_gauss $tree_opts \
  data/train data/lang exp/mono_ali $tri
run_log ${tri}_ali/log/align.log asrkd align data/train data/lang $tri ${tri}_ali
for s in dev test; do
  run_log ${tri}_ali_$s/log/align.log asrkd align data/$s data/lang $tri ${tri}_ali_$s
done
run_log $tri/graph/log/mkgraph.log asrkd make-graph data/lang_test $tri $tri/graph
decode_tuned $tri $tri/graph data/dev data/test $nj --model-dir $tri $grid
run_log $dnn/log/run.log asrkd train-dnn --config $nnet_config data/train ${tri}_ali data/dev ${tri}_ali_dev $dnn
for s in dev test; do
  for sys in exp/tri:exp/tri_ali:--model-dir:exp/tri exp/nnet/member_0:exp/tri_ali:--nnet:exp/nnet/member_0 \
             $tri:${tri}_ali:--model-dir:$tri $dnn:${tri}_ali:--nnet:$dnn; do
    IFS=: read -r d ali opt model <<< "$sys"
    run_log $d/log/frame_accuracy_$s.log asrkd frame-accuracy $opt $model --priors $ali data/$s ${ali}_$s \
      $d/frame_accuracy_$s.json
  done
done
decode_tuned $dnn $tri/graph data/dev data/test $nj --nnet $dnn --priors ${tri}_ali $grid
run_log exp/senones/log/compare.log asrkd compare-senones --lang data/lang \
  --system "run.sh tree:exp/tri:exp/tri_ali:exp/nnet/member_0" \
  --system "tree options '${tree_opts:-none}':$tri:${tri}_ali:$dnn" exp/senones
