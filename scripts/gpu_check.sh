#!/usr/bin/env bash
# GPU check (about 6 minutes on an H200): the gpu-marked tests, then the GPU benchmark
# (bench/gpu.py): where a batched Levenberg-Marquardt iteration spends its time (Jacobians,
# the projection's batched SVD with each cuSOLVER driver, the damped step), sweeps of 16 to
# 1,024 members with shared hidden layers (a linear sweep's default, each stage one batch on a
# GPU) and of 1 to 1,024 as one batched training, per-iteration costs on CPU and GPU side by
# side, and the public problems on the GPU. Run from the repo root on a CUDA machine; logs and
# bench results go to $OUT (a temporary folder when unset).
# The lent device machine has no network and no pydantic: carry its wheels in .whl/, made here by
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export OUT PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 150 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log"
# Each part writes $OUT/gpu.json when it ends: a run stopped by the timeout keeps the parts done.
timeout "${GPU_BENCH_S:-330}" python3 -m bench.gpu "$@" 2>&1 | tee "$OUT/gpu_bench.log"
