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
