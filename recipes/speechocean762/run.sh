#!/usr/bin/env bash
# speechocean762 recipe: data, lang, LM, fbank features, GMM-HMM (mono, tri), senone
# alignments, GMM decoding; then the paper's experiment: an ensemble of senone DNNs, its
# tempered soft targets, a distilled student, decoding and the comparison. Run from anywhere:
#   bash recipes/speechocean762/run.sh [--stage N] [--stop-stage N] [--nj N] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ../utils/path.sh

stage=0
stop_stage=100
nj=2
corpus_dir=../../../shared/data/speechocean762
lm_order=3
num_leaves=1500   # tree size and Gaussians of the triphone system, suited to 2 h of speech
tri_gauss=8000
lm_weights=9,12,15,18,21   # decoding grid searched on dev (acoustic scale 1/LMWT), rescored from
word_ins_penalties=0,1,2   # one lattice pass per model and set
nnet_config=conf/nnet.yaml   # conf/nnet_gpu.yaml: the paper's scale, for a GPU
device=auto
. ../utils/parse_options.sh

use_corpus_dir "$corpus_dir"
sets="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  echo "stage 0: data preparation"
  if [ ! -f data/train/spk2utt ]; then
    run_log exp/log/prepare_data.log python ../../local/prepare_speechocean762.py "$corpus_dir" data
  fi
  for s in $sets; do [ -f data/$s/spk2utt ] && asrkd validate-data-dir --no-audio data/$s; done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  echo "stage 1: lexicon and lang dir"
  run_log exp/log/prepare_lang.log asrkd prepare-lang --lexicon "$corpus_dir/resource/lexicon.txt" \
    $(for s in $sets; do [ -f data/$s/text ] && echo --text data/$s/text; done) data/lang
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  echo "stage 2: ${lm_order}-gram LM and G.fst"
  dev_text=data/dev/text; [ -f $dev_text ] || dev_text=data/test/text
  run_log exp/log/train_lm.log asrkd train-lm --order $lm_order --text data/train/text \
    --dev-text $dev_text --lang data/lang --lm-dir data/local/lm --lang-test data/lang_test
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  echo "stage 3: fbank features and CMVN stats"
  for s in $sets; do
    [ -d data/$s ] || continue
    run_log exp/log/make_fbank_$s.log asrkd compute-fbank --config conf/fbank.yaml --nj $nj data/$s
    run_log exp/log/compute_cmvn_$s.log asrkd compute-cmvn-stats data/$s
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  echo "stage 4: monophone GMM-HMM (flat start)"
  run_log exp/mono/log/train.log asrkd train-mono --tot-gauss 1000 data/train data/lang exp/mono
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  echo "stage 5: monophone alignment of train"
  run_log exp/mono_ali/log/align.log asrkd align data/train data/lang exp/mono exp/mono_ali
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  echo "stage 6: decision tree and tied-state triphone GMM-HMM"
  run_log exp/tri/log/train.log asrkd train-tri --num-leaves $num_leaves --tot-gauss $tri_gauss \
    data/train data/lang exp/mono_ali exp/tri
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  echo "stage 7: triphone alignments (senone targets for train, references for dev/test frame accuracy)"
  run_log exp/tri_ali/log/align.log asrkd align data/train data/lang exp/tri exp/tri_ali
  for s in dev test; do
    [ -d data/$s ] && run_log exp/tri_ali_$s/log/align.log asrkd align data/$s data/lang exp/tri exp/tri_ali_$s
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  echo "stage 8: decoding graphs HCLG for mono and tri"
  for m in mono tri; do
    run_log exp/$m/graph/log/mkgraph.log asrkd make-graph data/lang_test exp/$m exp/$m/graph
  done
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  echo "stage 9: GMM decoding: LM weight and insertion penalty chosen on dev, applied to test"
  for m in mono tri; do
    decode_tuned exp/$m exp/$m/graph dev test $nj --model-dir exp/$m \
      --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties
  done
  grep -H WER exp/*/decode_*/wer
fi

nnet_opts="--config $nnet_config --device $device data/train exp/tri_ali data/dev exp/tri_ali_dev"
if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  echo "stage 10: ensemble of senone DNNs on the tri alignment (member 0 is the baseline)"
  run_log exp/nnet/log/train_ensemble.log asrkd train-ensemble $nnet_opts exp/nnet
fi
members=$(for m in exp/nnet/member_*; do if [ -d $m ]; then echo "--nnet $m"; fi; done)

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  echo "stage 11: soft targets: members' averaged softmax(z/T) on train, top-k, every T of $nnet_config"
  run_log exp/nnet/log/make_soft_targets.log asrkd make-soft-targets --config $nnet_config $members data/train exp/nnet
fi

if [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  kd_t=$(config_value $nnet_config temperature)
  echo "stage 12: distillation into one DNN at T=$kd_t (soft + hard targets)"
  run_log exp/nnet/distilled/log/run.log asrkd train-dnn --soft-targets exp/nnet/soft_T$kd_t $nnet_opts exp/nnet/distilled
fi

if [ $stage -le 13 ] && [ $stop_stage -ge 13 ]; then
  echo "stage 13: frame accuracy on dev and test (tri GMM, every member and the ensemble, the student)"
  for s in dev test; do
    fa_args="data/$s exp/tri_ali_$s"
    run_log exp/tri/log/frame_accuracy_$s.log asrkd frame-accuracy --model-dir exp/tri --priors exp/tri_ali \
      $fa_args exp/tri/frame_accuracy_$s.json
    run_log exp/nnet/ensemble/log/frame_accuracy_$s.log asrkd frame-accuracy $members --per-member \
      --priors exp/tri_ali $fa_args exp/nnet/ensemble/frame_accuracy_$s.json
    run_log exp/nnet/distilled/log/frame_accuracy_$s.log asrkd frame-accuracy --nnet exp/nnet/distilled \
      --priors exp/tri_ali $fa_args exp/nnet/distilled/frame_accuracy_$s.json
  done
fi

if [ $stage -le 14 ] && [ $stop_stage -ge 14 ]; then
  echo "stage 14: hybrid decoding with the tri HCLG: baseline, ensemble, student (weights chosen on dev)"
  grid="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties"
  decode_tuned exp/nnet/member_0 exp/tri/graph dev test $nj --nnet exp/nnet/member_0 --priors exp/tri_ali $grid
  decode_tuned exp/nnet/ensemble exp/tri/graph dev test $nj $members --priors exp/tri_ali $grid
  decode_tuned exp/nnet/distilled exp/tri/graph dev test $nj --nnet exp/nnet/distilled --priors exp/tri_ali $grid
  grep -H WER exp/tri/decode_*/wer exp/nnet/*/decode_*/wer
fi

if [ $stage -le 15 ] && [ $stop_stage -ge 15 ]; then
  echo "stage 15: comparison table -> exp/compare/results.md"
  run_log exp/compare/log/compare.log asrkd compare --gmm exp/tri --nnet exp/nnet exp/compare
fi
