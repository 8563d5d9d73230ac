#!/usr/bin/env bash
# The GPU checks of the benchmark issue, each stage one short command on a device machine (benchmarks/README.md).
#
#   bash benchmarks/device.sh pack    # here: .device/ = ../shared (or $JAXDREAM_SHARED) + pytest wheels; git-ignored
#   bash benchmarks/device.sh tests   # there: faithfulness tests on the GPU        -> $OUT/gpu-tests.txt
#   bash benchmarks/device.sh f32     # there: the suite on the GPU and its CPU     -> $OUT/f32.{json,md,png}
#   bash benchmarks/device.sh bf16    # there: the suite on the GPU in bf16         -> $OUT/bf16.{json,md,png}
#
# With the device tool: run(command="bash benchmarks/device.sh tests", carry=[".device"]), then the same for f32 and
# bf16 (each stays well under the 10-minute limit), and copy the JSON/Markdown/PNG into benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"usage: bash benchmarks/device.sh pack|tests|f32|bf16"}
out=${OUT:-benchmarks/out}
py=$(command -v python || command -v python3)

if [[ $stage == pack ]]; then
    shared=${JAXDREAM_SHARED:-../shared}
    [[ -d $shared/golden ]] || { echo "no shared data at $shared (set JAXDREAM_SHARED)" >&2; exit 1; }
    rm -rf .device && mkdir -p .device
    cp -r "$shared" .device/shared
    "$py" -m pip download -q pytest -d .device/wheels
    du -sh .device
    exit 0
fi

[[ -d .device/shared ]] || { echo ".device/ is missing: run 'bash benchmarks/device.sh pack' here and carry it" >&2; exit 1; }
export JAXDREAM_SHARED=$PWD/.device/shared
mkdir -p "$out"
# --no-deps keeps the machine's CUDA jax; without setuptools (offline), import from the tree as the install would map it.
if ! "$py" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null; then
    ln -sfn ../weights jaxdream/weights && ln -sfn ../cli jaxdream/cli
    export PYTHONPATH=$PWD
fi
"$py" -c "import jax; print(jax.__version__, jax.devices())"

case $stage in
    tests)
        "$py" -c "import pytest" 2>/dev/null || "$py" -m pip install -q --no-index --find-links .device/wheels pytest
        "$py" -m pytest -q -p no:cacheprovider tests/test_image_ops.py tests/test_golden.py tests/test_precision.py \
            tests/test_pooling.py 2>&1 | tee "$out/gpu-tests.txt"
        ;;
    f32) "$py" -m benchmarks --device all --out "$out/f32.json" ;;
    bf16) "$py" -m benchmarks --device gpu --precision bf16 --out "$out/bf16.json" ;;
    *) echo "unknown stage $stage: use pack, tests, f32 or bf16" >&2; exit 2 ;;
esac
