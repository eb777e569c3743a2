#!/usr/bin/env bash
# Run the test suite in the project's virtualenv (created on first use).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup_env.sh"
cd "$root"
exec "${ASRKD_VENV:-$root/.venv}/bin/python" -m pytest -q "$@" tests
