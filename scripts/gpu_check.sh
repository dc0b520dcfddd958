#!/usr/bin/env bash
# GPU check (< 5 minutes): the gpu-marked tests, then the public problems on the GPU and
# per-iteration times on CPU and GPU side by side. Run from the repo root on a CUDA machine.
# On the lent device machine (no network) carry .gpu/ (pydantic wheels):
#   mkdir -p .gpu && pip download ... -d .gpu/whl pydantic pydantic_core annotated_types typing_inspection
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export OUT PYTHONUNBUFFERED=1
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m bench.gpu 2>&1 | tee "$OUT/gpu_bench.log"
