#!/usr/bin/env bash
# Run the test suite in the project's virtualenv (created or updated by tools/setup_env.sh,
# from requirements/lock.txt unless ASRKD_UNLOCKED=1). Arguments go to pytest: bash tools/test.sh -k yesno -x
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup_env.sh"
cd "$root"
# on one pytest-xdist worker per core (tests/conftest.py orders the tests and keeps the Slurm ones together)
exec "${ASRKD_VENV:-$root/.venv}/bin/python" -m pytest -q -n auto --dist loadgroup "$@" tests
