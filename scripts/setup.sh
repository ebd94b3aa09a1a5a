#!/usr/bin/env bash
# Installs what the project needs on a fresh machine; safe to run twice.
# torch is installed first, pinned, only when missing: an unpinned install would
# pull a CUDA build of several GB. Users on GPUs install their own build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
