#!/usr/bin/env bash
# speechocean762 recipe: data, lang, LM, fbank features, GMM-HMM (mono, tri), senone
# alignments, GMM decoding; then the paper's experiment: an ensemble of senone DNNs, its
# tempered soft targets, a distilled student, decoding and the comparison. Run from anywhere:
#   bash recipes/speechocean762/run.sh [--stage N] [--stop-stage N] [--nj N] [--cmd local|slurm] [--threads N] [--force true] [--beyond-paper true] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ../utils/path.sh

stage=0            # first stage to run (0-17, the stage table in the README)
stop_stage=100     # last stage to run
nj=2               # jobs a step is split into (features, alignment, decoding, soft targets)
cmd=             # where parallel jobs run: local (processes) or slurm (job arrays); default: cmd_config's
cmd_config=conf/cmd.yaml   # cmd, and the Slurm partition, CPUs, GPUs, memory and time limit of the jobs
corpus_dir=../../../shared/data/speechocean762   # the corpus as it came (audio, transcripts, lexicon)
lm_order=3         # n-gram order of the LM
mono_gauss=1000   # Gaussians of the monophone system
num_leaves=1500   # tree size and Gaussians of the triphone system, suited to 2 h of speech
tri_gauss=8000     # Gaussians of the triphone systems
tree_opts="--no-split-silence --cluster-leaves"   # about 1230 senones, 10 of them silence (local/senone_inventory.sh)
lda_mllt=true     # also tri2: LDA+MLLT features (Kaldi's tri2b), trained from tri's alignment, sized as tri
sat=true          # also tri3: speaker-adaptive training with fMLLR (Kaldi's tri3b) from tri2's alignment, sized as tri
nnet_gmm=auto     # the GMM whose tree, alignments and HCLG the neural stages use: tri, tri2, tri3, or auto (the lowest tuning-set WER)
nnet_feats=fmllr  # the networks' inputs: fbank, or fmllr (the SAT GMM's speaker-adapted features; needs nnet_gmm tri3)
speed_perturb=false   # true: the networks train on train and its copies at speeds 0.9 and 1.1 (3x the frames)
section6=true     # false: leave out stage 13 (paper section 6: 3% of train, hard vs soft targets)
beyond_paper=false   # true: also stage 14 (teacher switching, the student of mixed-up teachers), stage 13's
                     # model of mixed-up windows, stage 11's per-member soft targets: about 37 min more
lm_weights=9,12,15,18,21   # LM weights of the decoding grid searched on dev (acoustic scale 1/LMWT)
word_ins_penalties=0,1,2   # and its insertion penalties (one lattice pass per model and set, rescored)
nnet_config=conf/nnet.yaml   # conf/nnet_gpu.yaml: the paper's scale, for a GPU
nnet_affix=       # _<name>: the neural stages write exp/nnet_<name> and exp/compare_<name> (a second config beside the first)
subset_config=conf/nnet_subset.yaml   # section 6: 3% of the data, hard vs soft targets
subset_percent=3   # stage 13's share of the training frames
device=auto        # training device: auto (cuda where present, else cpu), cpu, or cuda
threads=0        # CPU threads of training stages (0: OMP_NUM_THREADS where set, else nj, at most the cores)
force=false      # true: redo every stage that runs (the old outputs are replaced once the new ones are done)
. ../utils/parse_options.sh
recipe_setup

use_corpus_dir "$corpus_dir"
sets="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  begin_stage 0 "data preparation"
  if [ ! -f data/train/spk2utt ]; then
    run_log exp/log/prepare_data.log python ../../local/prepare_speechocean762.py "$corpus_dir" data
  fi
  for s in $sets; do [ -f data/$s/spk2utt ] && asrkd validate-data-dir --no-audio data/$s; done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  begin_stage 1 "lexicon and lang dir"
  run_log exp/log/prepare_lang.log asrkd prepare-lang --lexicon "$corpus_dir/resource/lexicon.txt" \
    $(for s in $sets; do [ -f data/$s/text ] && echo --text data/$s/text; done) data/lang
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  begin_stage 2 "${lm_order}-gram LM and G.fst"
  dev_text=data/dev/text; [ -f $dev_text ] || dev_text=data/test/text
  run_log exp/log/train_lm.log asrkd train-lm --order $lm_order --text data/train/text \
    --dev-text $dev_text --lang data/lang --lm-dir data/local/lm --lang-test data/lang_test
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  begin_stage 3 "fbank features and CMVN stats"
  for s in $sets; do
    [ -d data/$s ] || continue
    run_log exp/log/make_fbank_$s.log asrkd compute-fbank --config conf/fbank.yaml --nj $nj $cmd_opts data/$s
    run_log exp/log/compute_cmvn_$s.log asrkd compute-cmvn-stats --nj $nj $cmd_opts data/$s
  done
fi

train_set=train tune_set=dev test_set=test
. ../utils/gmm_stages.sh

# stages 10-17: ensemble, soft targets, temperature sweep, section 6, teacher switching, frame
# accuracy, decoding, comparison
train_ali=exp/${nnet_gmm}_ali tune_ali=exp/${nnet_gmm}_ali_dev test_ali=exp/${nnet_gmm}_ali_test
grid="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties"
. ../utils/nnet_stages.sh
