#!/usr/bin/env bash
# Create (or update) the project's virtualenv at $ASRKD_VENV (default: <repo>/.venv).
#
# Default: install the locked versions, requirements/lock.txt (exact versions with sha256
# hashes, refreshed by tools/lock.sh; torch is the CPU build 2.13.0+cpu from /opt/wheels,
# found through the machine's pip config), with `pip install --require-hashes`, then
# asrkd itself with `pip install --no-deps -e .`, then `pip check`.
#
# Another torch, e.g. a CUDA build:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash tools/setup_env.sh
# installs the lock without its torch line, then `pip install $TORCH_SPEC` (words split as
# pip arguments); torch brings its own dependencies (nvidia-*, triton) and keeps the
# locked versions of the rest where it accepts them.
#
# ASRKD_UNLOCKED=1: ignore the lock, as a library user would: torch from TORCH_SPEC
# (default torch==2.13.0, the local CPU build), then `pip install -e .[test]` with
# setup.py's ranges (that day's newest releases within them).
#
# PYTHON: the interpreter that creates the venv (default python3).
# Idempotent: a stamp records the hashes of setup.py and the lock, TORCH_SPEC and the mode.
[[ ${1:-} =~ ^(-h|--help)$ ]] && { sed -n '2,/^set -e/s/^# \{0,1\}//p' "$0"; exit 0; }
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ASRKD_VENV:-$root/.venv}
lock=$root/requirements/lock.txt
unlocked=${ASRKD_UNLOCKED:-0}
[ "$unlocked" = 0 ] && unlocked=
if [ -n "$unlocked" ]; then
  torch_spec=${TORCH_SPEC:-torch==2.13.0}
else
  torch_spec=${TORCH_SPEC:-}
fi
python=${PYTHON:-python3}
stamp="$venv/.asrkd-stamp"
want="setup.py $(sha1sum < "$root/setup.py" | cut -d' ' -f1)"
if [ -n "$unlocked" ]; then
  want="$want unlocked"
else
  want="$want lock $(sha1sum < "$lock" | cut -d' ' -f1)"
fi
want="$want torch_spec=$torch_spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
read -r -a torch_args <<< "$torch_spec"
echo "setup_env: installing into $venv${unlocked:+ (unlocked: the ranges in setup.py)}" >&2
rm -f "$stamp"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
if [ -n "$unlocked" ]; then
  "${pip[@]}" install -q "${torch_args[@]}"
  "${pip[@]}" install -q -e "$root[test]"
else
  reqs=$lock
  if [ -n "$torch_spec" ]; then
    # the lock less its torch entry (the line and its indented hashes and comments)
    reqs=$(mktemp)
    trap 'rm -f "$reqs"' EXIT
    awk '/^torch==/ {skip = 1; next} skip && /^[ \t]/ {next} {skip = 0; print}' "$lock" > "$reqs"
  fi
  "${pip[@]}" install -q --require-hashes -r "$reqs"
  [ -z "$torch_spec" ] || "${pip[@]}" install -q "${torch_args[@]}"
  "${pip[@]}" install -q --no-deps -e "$root"
  if ! "${pip[@]}" check >&2; then
    echo "setup_env: the installed set is inconsistent; if setup.py changed, refresh the lock: bash tools/lock.sh" >&2
    exit 1
  fi
fi
echo "$want" > "$stamp"
