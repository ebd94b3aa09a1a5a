#!/usr/bin/env bash
# The test command: set-up, then the whole suite (extra arguments go to pytest);
# -rs lists each skipped test with its reason (the GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest -p no:cacheprovider -n 2 -rs "$@"
