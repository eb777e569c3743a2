#!/usr/bin/env bash
# speechocean762 recipe: data, lang, LM and fbank features (later stages: GMM-HMM,
# senone targets, ensemble, distillation, decoding). Run from anywhere:
#   bash recipes/speechocean762/run.sh [--stage N] [--stop-stage N] [--nj N] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ../utils/path.sh

stage=0
stop_stage=100
nj=2
corpus_dir=../../../shared/data/speechocean762
lm_order=3
. ../utils/parse_options.sh

[ -d "$corpus_dir" ] || { echo "$0: corpus dir '$corpus_dir' not found (use --corpus-dir)" >&2; exit 1; }
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
  echo "stage 4: monophone GMM-HMM (flat start) and alignment"
  run_log exp/mono/log/train.log asrkd train-mono --tot-gauss 1000 data/train data/lang exp/mono
fi
