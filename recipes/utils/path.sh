# Sourced by run.sh right after it changes into its recipe dir: make sure the project's
# virtualenv exists and put it on PATH.
asrkd_caller=${OLDPWD:-$PWD}   # where run.sh was started: relative --*-dir/--*-config values are from there
asrkd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ -n "${ASRKD_SKIP_SETUP:-}" ] || bash "$asrkd_root/tools/setup_env.sh"
export PATH="${ASRKD_VENV:-$asrkd_root/.venv}/bin:$PATH"
export PYTHONPATH="$asrkd_root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# run_log LOGFILE CMD...: run CMD, adding its output to LOGFILE after a line with the time and
# CMD (a rerun that finds the output finished adds its "skipping" line, and the log of the run
# that made it stays); fails when CMD fails.
run_log() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  echo "# $(date -Is) $*" >> "$logfile"
  "$@" 2>&1 | tee -a "$logfile"
  return "${PIPESTATUS[0]}"
}

# decode_tuned DIR GRAPH TUNE_DATA TEST_DATA NJ OPTS...: decode the data dir TUNE_DATA into
# DIR/decode_<its name> over the LM weight / insertion penalty grid, then TEST_DATA with the
# pair chosen on TUNE_DATA only. OPTS name the model (--model-dir, --nnet..., --priors) and the
# grid; a first `--decode decode-fmllr` decodes a SAT model in two passes.
decode_tuned() {
  local d=$1 graph=$2 tune=$3 test=$4 nj=$5 decode=decode; shift 5
  if [ "${1:-}" = --decode ]; then decode=$2; shift 2; fi
  local tune_dir=$d/decode_$(basename $tune) test_dir=$d/decode_$(basename $test)
  run_log $tune_dir/log/run.log asrkd $decode --nj $nj $cmd_opts "$@" $graph $tune $tune_dir
  run_log $test_dir/log/run.log asrkd $decode --nj $nj $cmd_opts --tuned-on $tune_dir "$@" $graph $test $test_dir
}

# choose_gmm TUNE_SET SYSTEMS...: the GMM system with the lowest WER on TUNE_SET (the first of
# those tied), from exp/<system>/decode_<TUNE_SET>/wer; the WERs and the choice go to
# exp/nnet_gmm.txt. Once a neural dir exists (exp/nnet, exp/nnet_<affix>), a choice other
# than the recorded one is an error.
choose_gmm() {
  local tune=$1 m d wer best= best_wer= before= trained=; shift
  [ ! -f exp/nnet_gmm.txt ] || before=$(awk '$1 == "chosen:" {print $2}' exp/nnet_gmm.txt)
  : > exp/nnet_gmm.txt.new
  for m in "$@"; do
    wer=$(awk '$1 == "%WER" {print $2; exit}' exp/$m/decode_$tune/wer 2>/dev/null || true)
    if [ -z "$wer" ]; then
      rm exp/nnet_gmm.txt.new
      echo "$0: --nnet-gmm auto: no %WER in exp/$m/decode_$tune/wer (decode it in stage 9)" >&2
      exit 1
    fi
    echo "$m $tune WER $wer" >> exp/nnet_gmm.txt.new
    if [ -z "$best" ] || awk -v a=$wer -v b=$best_wer 'BEGIN {exit !(a < b)}'; then best=$m best_wer=$wer; fi
  done
  echo "chosen: $best (lowest $tune WER)" >> exp/nnet_gmm.txt.new
  for d in exp/nnet exp/nnet_*; do
    if [ -d $d ]; then trained="$trained$d "; fi
  done
  if [ -n "$before" ] && [ "$before" != "$best" ] && [ -n "$trained" ]; then
    rm exp/nnet_gmm.txt.new
    echo "$0: --nnet-gmm auto now chooses $best, but ${trained% } trained on $before (exp/nnet_gmm.txt): give" \
      "--nnet-gmm $before to go on with them, or move them away" >&2
    exit 1
  fi
  mv exp/nnet_gmm.txt.new exp/nnet_gmm.txt
  echo "nnet_gmm=auto: $best, the lowest $tune WER of $* (exp/nnet_gmm.txt)" >&2
  echo $best
}

# config_value YAML KEY: print one option of a config file (e.g. the distillation temperature).
config_value() {
  python -c "import sys, yaml; print('%g' % yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"
}

# same_as_before FILE VALUE OPTION: data/ is prepared with VALUE of OPTION, recorded in FILE by
# the first run; another VALUE is an error, so a changed option is never silently ignored.
same_as_before() {
  if [ -f "$1" ] && [ "$(cat "$1")" != "$2" ]; then
    echo "$0: data/ was prepared with $3 $(cat "$1"), not $2: remove data/ and exp/ to prepare it again" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$1")"
  echo "$2" > "$1"
}

# use_corpus_dir DIR: DIR must exist and be the corpus that data/ was prepared from (its real
# path is recorded in data/.corpus_dir by the first run), so a new --corpus-dir is never ignored.
use_corpus_dir() {
  [ -d "$1" ] || { echo "$0: corpus dir '$1' not found (use --corpus-dir)" >&2; exit 1; }
  same_as_before data/.corpus_dir "$(cd "$1" && pwd -P)" --corpus-dir
}

# recipe_setup: after the options are parsed: one run of a recipe at a time (exp/.run.lock, held
# by flock until this shell exits), the thread count of single-process stages (--threads,
# default: OMP_NUM_THREADS where it is set, else nj, at most the cores; parallel jobs such as
# decoding use one thread each),
# --force true passed on to every asrkd command, and $cmd_opts (--cmd, --cmd-config) for the
# commands that run jobs.
recipe_setup() {
  mkdir -p exp
  exec 9>>exp/.run.lock
  flock -n 9 || { echo "$0: this recipe is already running (pid $(cat exp/.run.lock)) in $PWD" >&2; exit 1; }
  echo $$ > exp/.run.lock
  if [ "$threads" -le 0 ]; then
    local cores; cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    threads=$nj
    [[ ! ${OMP_NUM_THREADS:-} =~ ^[1-9][0-9]*$ ]] || threads=$OMP_NUM_THREADS
    threads=$(( threads < cores ? threads : cores ))
  fi
  export OMP_NUM_THREADS=$threads
  echo "$0: $nj parallel jobs, $threads threads in single-process stages"
  local v
  for v in nnet_config subset_config; do
    [ -z "${!v+x}" ] || [ -f "${!v}" ] || { echo "$0: --${v//_/-} ${!v}: no such file" >&2; exit 1; }
  done
  [ -f "$cmd_config" ] || { echo "$0: --cmd-config $cmd_config: no such file" >&2; exit 1; }
  [ -n "$cmd" ] || cmd=$(python -c "import sys, yaml; print((yaml.safe_load(open(sys.argv[1])) or {}).get('cmd', 'local'))" "$cmd_config")
  case $cmd in
    local|slurm) ;;
    *) echo "$0: --cmd must be local or slurm, got '$cmd'" >&2; exit 1 ;;
  esac
  cmd_opts="--cmd $cmd --cmd-config $cmd_config"
  echo "$0: jobs run on $cmd (--cmd-config $cmd_config)"
  if [ "$cmd" = slurm ] && ! command -v sbatch > /dev/null; then
    echo "$0: --cmd slurm: sbatch is not on PATH (docs/cluster.md)" >&2; exit 1
  fi
  case $force in
    true) export ASRKD_FORCE=1 ;;
    false) ;;
    *) echo "$0: --force must be true or false, got '$force'" >&2; exit 1 ;;
  esac
}

# begin_stage N TEXT: announce stage N; the previous stage's wall time goes to
# exp/log/stage_times.tsv (stage, seconds, finish time) when the next begins or the run ends.
begin_stage() {
  end_stage
  _stage=$1 _stage_t0=$(date +%s)
  echo "stage $1: $2"
}
end_stage() {
  if [ -n "${_stage:-}" ]; then
    mkdir -p exp/log
    printf '%s\t%s\t%s\n' "$_stage" $(( $(date +%s) - _stage_t0 )) "$(date -Is)" >> exp/log/stage_times.tsv
    _stage=
  fi
}
trap '[ $? -eq 0 ] && end_stage' EXIT
# a run stopped by a signal exits non-zero, so the EXIT trap does not time its unfinished stage
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM

# chosen_temperature: T of the student that $nnet_dir/distilled (default exp/nnet) links to (select-model).
chosen_temperature() {
  local t link=${nnet_dir:-exp/nnet}/distilled
  t=$(readlink $link) || { echo "$0: $link is missing (run stage 12)" >&2; return 1; }
  echo "${t#student_T}"
}
