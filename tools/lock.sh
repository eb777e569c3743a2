#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact versions with sha256 hashes that
# tools/setup_env.sh installs by default:
#
#   bash tools/lock.sh                        # follow setup.py: add/drop packages, keep every other pin
#   bash tools/lock.sh --upgrade              # newest releases within setup.py's ranges
#   bash tools/lock.sh --upgrade-package numpy    # only that one (and what it needs)
#
# Arguments go to `uv pip compile`, which resolves setup.py's install_requires and the
# `test` extra for CPython 3.11 on linux x86-64 (manylinux_2_28) from PyPI, plus the
# find-links in $PIP_FIND_LINKS (default /opt/wheels) for the CPU torch wheel, under
# requirements/constraints.txt (torch==2.13.0+cpu). Pins already in the lock are kept
# unless an argument asks for upgrades. Set UV_INDEX_URL for a PyPI mirror.
# uv is taken from PATH, or installed once (pinned) into ~/.cache/asrkd/uv.
# Afterwards: bash tools/setup_env.sh, run the tests, commit the lock.
[[ ${1:-} =~ ^(-h|--help)$ ]] && { sed -n '2,/^set -e/s/^# \{0,1\}//p' "$0"; exit 0; }
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
uv_version=0.13.9
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
  tooldir=${XDG_CACHE_HOME:-$HOME/.cache}/asrkd/uv
  uv=$tooldir/bin/uv
  if ! [ -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$uv_version" ]; then
    "${PYTHON:-python3}" -m venv "$tooldir"
    "$tooldir/bin/python" -m pip install -q "uv==$uv_version"
  fi
fi
find_links=()
for d in ${PIP_FIND_LINKS:-/opt/wheels}; do find_links+=(--find-links "$d"); done
cd "$root"
"$uv" pip compile setup.py --extra test \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --generate-hashes "${find_links[@]}" \
  -c requirements/constraints.txt \
  --custom-compile-command "bash tools/lock.sh" \
  --quiet -o requirements/lock.txt "$@"
if grep -qE '^(nvidia-|triton==)' requirements/lock.txt; then
  echo "lock.sh: requirements/lock.txt holds CUDA packages (nvidia-*/triton); torch must be the CPU build" >&2
  exit 1
fi
echo "lock.sh: requirements/lock.txt: $(grep -c '^[A-Za-z0-9]' requirements/lock.txt) packages" >&2
