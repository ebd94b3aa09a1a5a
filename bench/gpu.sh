#!/usr/bin/env bash
# The GPU checks, for a machine with a CUDA device, in one go: the test suite
# (tests/test_gpu.py runs there instead of skipping), then the GPU section of the
# bench. Nothing is fetched: the plugin is installed from this checkout without
# its dependencies, which must be there already (torch with CUDA, pytest,
# tabulate, scikit-learn, hypothesis). Logs go to $OUT when it is set, else to
# bench/out. QUICK=1 runs the bench at small sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGS=${OUT:-bench/out}
mkdir -p "$LOGS"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: torch sees no CUDA device here; nothing to do" >&2
    exit 2
fi
if ! "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1; then
    cat "$LOGS/install.log" >&2
    exit 1
fi
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$LOGS/gpu.txt"
# The whole suite: GPU tests, and the CPU tests on a machine where auto means CUDA.
"$PY" -m pytest -p no:cacheprovider -q -rs -n 8 tests 2>&1 | tee "$LOGS/tests.log"
tests=${PIPESTATUS[0]}
PYTHONUNBUFFERED=1 "$PY" bench/run.py --only gpu ${QUICK:+--quick} 2>&1 | tee "$LOGS/gpu_bench.md"
bench=${PIPESTATUS[0]}
exit $((tests != 0 || bench != 0))
