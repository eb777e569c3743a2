# Sourced by run.sh: make sure the project's virtualenv exists and put it on PATH.
asrkd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ -n "${ASRKD_SKIP_SETUP:-}" ] || bash "$asrkd_root/tools/setup_env.sh"
export PATH="${ASRKD_VENV:-$asrkd_root/.venv}/bin:$PATH"
export PYTHONPATH="$asrkd_root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# run_log LOGFILE CMD...: run CMD, copying its output to LOGFILE; fails when CMD fails.
run_log() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  echo "# $*" > "$logfile"
  "$@" 2>&1 | tee -a "$logfile"
  return "${PIPESTATUS[0]}"
}

# decode_tuned MODEL_DIR TUNE_SET TEST_SET NJ GRID_OPTS...: decode data/TUNE_SET over the LM
# weight / insertion penalty grid, then data/TEST_SET with the pair chosen on TUNE_SET only.
decode_tuned() {
  local m=$1 tune=$2 test=$3 nj=$4; shift 4
  run_log $m/decode_$tune/log/run.log asrkd decode --model-dir $m --nj $nj "$@" \
    $m/graph data/$tune $m/decode_$tune
  run_log $m/decode_$test/log/run.log asrkd decode --model-dir $m --nj $nj --tuned-on $m/decode_$tune \
    $m/graph data/$test $m/decode_$test
}
