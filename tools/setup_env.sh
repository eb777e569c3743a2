#!/usr/bin/env bash
# Create (or update) the project's virtualenv at $ASRKD_VENV (default: <repo>/.venv).
# torch is installed first from TORCH_SPEC (default: the local CPU build torch==2.13.0),
# so that the unpinned requirement in setup.py never pulls CUDA wheels.
# Idempotent: a stamp records the hash of setup.py and TORCH_SPEC.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ASRKD_VENV:-$root/.venv}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
python=${PYTHON:-python3}
stamp="$venv/.asrkd-stamp"
want="$(cat "$root/setup.py" | sha1sum | cut -d' ' -f1) $torch_spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup_env: installing into $venv" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$torch_spec"
"$venv/bin/python" -m pip install -q -e "$root[test]"
echo "$want" > "$stamp"
