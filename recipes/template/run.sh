#!/usr/bin/env bash
# A recipe for your own corpus: copy recipes/template to recipes/<corpus>, point --prep at your
# data preparation, name the sets and size the models (docs/own-corpus.md). Stages 0-17 as in
# the other recipes: data, lang, LM, fbank, mono and tri GMM-HMMs, senone alignments, GMM
# decoding, then the DNN ensemble, soft targets, a distilled student, decoding and comparison.
#   bash recipes/<corpus>/run.sh --corpus-dir DIR [--prep CMD] [--train-set S] [--tune-set S] [--test-set S]
#        [--stage N] [--stop-stage N] [--nj N] [--cmd local|slurm] [--threads N] [--force true] [--section6 false] [--beyond-paper false] [--name value]
set -euo pipefail
cd "$(dirname "$0")"
. ../utils/path.sh

stage=0            # first stage to run (0-17, the stage table in the README)
stop_stage=100     # last stage to run
nj=2               # jobs a step is split into (features, alignment, decoding, soft targets)
cmd=             # where parallel jobs run: local (processes) or slurm (job arrays); default: cmd_config's
cmd_config=conf/cmd.yaml   # cmd, and the Slurm partition, CPUs, GPUs, memory and time limit of the jobs
threads=0        # CPU threads of training stages (0: OMP_NUM_THREADS where set, else nj, at most the cores)
force=false      # true: redo every stage that runs (the old outputs are replaced once the new ones are done)
device=auto        # training device: auto (cuda where present, else cpu), cpu, or cuda
corpus_dir=      # the corpus as it came (audio, transcripts); required
# Stage 0 runs `$prep CORPUS_DIR data` in this dir. It must write data/<set>/{wav.scp,text,utt2spk,spk2utt}
# for every set below and data/local/dict/lexicon.txt (WORD PHONE PHONE ...). The default,
# local/prepare.sh, turns CORPUS_DIR/<set>/ folders of audio with same-stem .txt transcripts into data dirs.
prep="bash local/prepare.sh"   # the preparation command (see above)
train_set=train    # the training set's data dir name
tune_set=dev     # chooses the LR schedule, the student's T and the LM weight; may be the train set (no dev set)
test_set=test    # scored only, never tuned on
lang_opts=       # prepare-lang options, e.g. --no-cmudict (words the lexicon lacks -> <UNK>), --keep-stress
lm_order=3       # n-gram order of the LM (1: a unigram, for a fixed-vocabulary task such as yes/no)
fbank_config=conf/fbank.yaml   # sample_frequency must be the audio's rate; dither from local/noise_floor.py
mono_gauss=500   # Gaussians of the monophone GMM-HMM
num_leaves=500   # senones: leaves of the decision tree (about one per 500-1000 training frames)
tri_gauss=3000   # Gaussians of the triphone GMM-HMM (about one per 100 training frames)
tree_opts=       # train-tri options, e.g. --min-leaf-occ 20 for a tiny corpus, --no-split-silence --cluster-leaves
lda_mllt=true    # also tri2: LDA+MLLT features (Kaldi's tri2b), trained from tri's alignment, sized as tri
sat=false        # also tri3: speaker-adaptive training with fMLLR (Kaldi's tri3b) from tri2's alignment, sized as tri
nnet_gmm=tri     # the GMM whose tree, alignments and HCLG the neural stages use: tri, tri2, tri3, or auto (the lowest tuning-set WER)
nnet_feats=fbank  # the networks' inputs: fbank, or fmllr (the SAT GMM's speaker-adapted features; needs nnet_gmm tri3)
speed_perturb=false   # true: the networks train on train and its copies at speeds 0.9 and 1.1 (3x the frames)
lm_weights=7,10,13,16,19   # decoding grid searched on the tuning set (acoustic scale 1/LMWT)
word_ins_penalties=0,1   # word insertion penalties of that grid
nnet_config=conf/nnet.yaml     # network, training, ensemble and distillation options
nnet_affix=       # _<name>: the neural stages write exp/nnet_<name> and exp/compare_<name> (a second config beside the first)
section6=true       # false: leave out stage 13 (paper section 6: the subset models)
beyond_paper=true   # false: leave out stage 14 (teacher switching, the student of mixed-up teachers) and
                    # stage 13's model of mixed-up windows
subset_config=      # stage 13's network (default: nnet_config)
subset_percent=10   # stage 13's share of the training frames
. ../utils/parse_options.sh
[ -n "$subset_config" ] || subset_config=$nnet_config
recipe_setup

[ -n "$corpus_dir" ] || { echo "$0: give --corpus-dir (the corpus that --prep reads)" >&2; exit 1; }
[ -f "$fbank_config" ] || { echo "$0: --fbank-config $fbank_config: no such file" >&2; exit 1; }
if [ "$test_set" = "$train_set" ] || [ "$test_set" = "$tune_set" ]; then
  echo "$0: --test-set must differ from the train and tuning sets (weights are never tuned on test)" >&2; exit 1
fi
use_corpus_dir "$corpus_dir"
same_as_before data/.prep "$prep" --prep
sets=$train_set
[ "$tune_set" = "$train_set" ] || sets="$sets $tune_set"
sets="$sets $test_set"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  begin_stage 0 "data preparation ($prep) and validation"
  todo=false
  for s in $sets; do [ -f data/$s/spk2utt ] || todo=true; done
  [ -f data/local/dict/lexicon.txt ] || todo=true
  if $todo; then
    run_log exp/log/prepare_data.log bash -c "$prep \"\$1\" \"\$2\"" prep "$corpus_dir" data
  fi
  for s in $sets; do
    [ -f data/$s/spk2utt ] || { echo "$0: $prep wrote no data/$s (the sets are: $sets)" >&2; exit 1; }
    asrkd validate-data-dir --no-audio data/$s
  done
  [ -f data/local/dict/lexicon.txt ] || { echo "$0: $prep wrote no data/local/dict/lexicon.txt" >&2; exit 1; }
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  begin_stage 1 "lexicon and lang dir"
  run_log exp/log/prepare_lang.log asrkd prepare-lang $lang_opts --lexicon data/local/dict/lexicon.txt \
    $(for s in $sets; do echo --text data/$s/text; done) data/lang
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  # perplexity is reported on the tuning set's text, or on test's when the tuning set is train
  dev_text=data/$tune_set/text
  [ "$tune_set" != "$train_set" ] || dev_text=data/$test_set/text
  begin_stage 2 "${lm_order}-gram LM and G.fst"
  run_log exp/log/train_lm.log asrkd train-lm --order $lm_order --text data/$train_set/text \
    --dev-text $dev_text --lang data/lang --lm-dir data/local/lm --lang-test data/lang_test
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  begin_stage 3 "fbank features and CMVN stats"
  for s in $sets; do
    run_log exp/log/make_fbank_$s.log asrkd compute-fbank --config "$fbank_config" --nj $nj $cmd_opts data/$s
    run_log exp/log/compute_cmvn_$s.log asrkd compute-cmvn-stats --nj $nj $cmd_opts data/$s
  done
fi

. ../utils/gmm_stages.sh

# stages 10-17 (recipes/utils/nnet_stages.sh): ensemble, soft targets, temperature sweep,
# [section 6 unless --section6 false; teacher switching and mixed-up teachers unless --beyond-paper
# false], frame accuracy, decoding, comparison
train_ali=exp/${nnet_gmm}_ali test_ali=exp/${nnet_gmm}_ali_$test_set tune_ali=exp/${nnet_gmm}_ali_$tune_set
[ "$tune_set" != "$train_set" ] || tune_ali=exp/${nnet_gmm}_ali
grid="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties"
. ../utils/nnet_stages.sh
