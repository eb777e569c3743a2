#!/usr/bin/env bash
# yes/no recipe (Kaldi egs/yesno): a whole system on 60 short files, for smoke tests: GMM-HMMs,
# then a tiny DNN ensemble, soft targets, a distilled student and the comparison table.
#   bash recipes/yesno/run.sh [--stage N] [--stop-stage N] [--nj N] [--cmd local|slurm] [--threads N] [--force true] [--section6 false] [--beyond-paper false] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ../utils/path.sh

stage=0            # first stage to run (0-17, the stage table in the README)
stop_stage=100     # last stage to run
nj=2               # jobs a step is split into (features, alignment, decoding, soft targets)
cmd=             # where parallel jobs run: local (processes) or slurm (job arrays); default: cmd_config's
cmd_config=conf/cmd.yaml   # cmd, and the Slurm partition, CPUs, GPUs, memory and time limit of the jobs
corpus_dir=../../../shared/data/yesno/waves_yesno   # the corpus as it came (the .wav files; their names are the transcripts)
device=auto        # training device: auto (cuda where present, else cpu), cpu, or cuda
nnet_config=conf/nnet.yaml   # network, training, ensemble and distillation options
nnet_affix=       # _<name>: the neural stages write exp/nnet_<name> and exp/compare_<name> (a second config beside the first)
subset_config=conf/nnet.yaml   # stage 13's network and training options
subset_percent=30   # of 30 files: 9 or 10
threads=0        # CPU threads of training stages (0: OMP_NUM_THREADS where set, else nj, at most the cores)
lda_mllt=true    # also tri2: LDA+MLLT features (Kaldi's tri2b), trained from tri's alignment
sat=false        # also tri3: speaker-adaptive training with fMLLR (Kaldi's tri3b) from tri2's alignment, sized as tri
nnet_gmm=tri     # the GMM whose tree, alignments and HCLG the neural stages use: tri, tri2, tri3, or auto (the lowest tuning-set WER)
nnet_feats=fbank  # the networks' inputs: fbank, or fmllr (the SAT GMM's speaker-adapted features; needs nnet_gmm tri3)
speed_perturb=false   # true: the networks train on train and its copies at speeds 0.9 and 1.1 (3x the frames)
section6=true       # false: leave out stage 13 (paper section 6: the subset models)
beyond_paper=true   # false: leave out stage 14 (teacher switching, the student of mixed-up teachers) and
                    # stage 13's model of mixed-up windows
force=false      # true: redo every stage that runs (the old outputs are replaced once the new ones are done)
. ../utils/parse_options.sh
recipe_setup

use_corpus_dir "$corpus_dir"
sets="train_yesno test_yesno"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  begin_stage 0 "data preparation"
  [ -f data/train_yesno/spk2utt ] || run_log exp/log/prepare_data.log python ../../local/prepare_yesno.py "$corpus_dir" data
  for s in $sets; do asrkd validate-data-dir --no-audio data/$s; done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  begin_stage 1 "lang dir"
  run_log exp/log/prepare_lang.log asrkd prepare-lang --no-cmudict --sil-prob 0.5 \
    --lexicon data/local/dict/lexicon.txt --text data/train_yesno/text data/lang
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  # a unigram, as Kaldi's yesno task grammar: every training file starts with NO, so a bigram
  # would all but forbid the YES that starts 29 of the 30 test files
  begin_stage 2 "unigram LM and G.fst"
  run_log exp/log/train_lm.log asrkd train-lm --order 1 --text data/train_yesno/text \
    --dev-text data/test_yesno/text --lang data/lang --lm-dir data/local/lm --lang-test data/lang_test
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  begin_stage 3 "fbank features and CMVN stats"
  for s in $sets; do
    run_log exp/log/make_fbank_$s.log asrkd compute-fbank --config conf/fbank.yaml --nj $nj $cmd_opts data/$s
    run_log exp/log/compute_cmvn_$s.log asrkd compute-cmvn-stats --nj $nj $cmd_opts data/$s
  done
fi

# stages 4-9 (recipes/utils/gmm_stages.sh): yesno has no dev set, so the GMMs' LM weight and
# penalty are chosen on train and applied to test
train_set=train_yesno tune_set=train_yesno test_set=test_yesno
mono_gauss=150 num_leaves=20 tri_gauss=150 tree_opts="--min-leaf-occ 20"
lm_weights=2,5,10,15,20 word_ins_penalties=0,1
. ../utils/gmm_stages.sh

# stages 10-17 (recipes/utils/nnet_stages.sh): ensemble, soft targets, temperature sweep, the
# section-6 subset, teacher switching, frame accuracy, decoding, comparison. yesno has no dev
# set: the training set drives the LR schedule, the model choice and the LM weight, as above.
train_ali=exp/${nnet_gmm}_ali tune_ali=exp/${nnet_gmm}_ali test_ali=exp/${nnet_gmm}_ali_test_yesno
grid="--lm-weights 2,5,10 --word-ins-penalties 0,1"
. ../utils/nnet_stages.sh
