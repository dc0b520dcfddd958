"""``python -m bench.compile_cache``: the cost of ``options.compile`` in a fresh process, twice.

The second process finds torch inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default
under /tmp) warm, so its compile is cheaper. Prints one JSON line per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT

CHILD = r"""
import json, time, torch
torch.set_num_threads(2)
from odeserve.examples import public_problems
from odeserve import solve
spec = public_problems()["lagaris3_ivp"]
t = time.perf_counter(); eager = solve(spec); t_eager = time.perf_counter() - t
t = time.perf_counter(); comp = solve(spec | {"options": {"compile": True}}); t_comp = time.perf_counter() - t
print(json.dumps({"eager_s": t_eager, "compiled_s": t_comp,
                  "eager_rel_l2": eager.metrics().error["y"].rel_l2,
                  "compiled_rel_l2": comp.metrics().error["y"].rel_l2}))
"""


def main() -> list[dict]:
    runs = []
    cache = tempfile.mkdtemp(prefix="odeserve-inductor-")  # cold for the first process only
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    for label in ("first process (cold cache)", "second process (warm cache)"):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, check=True, env=env
        )
        row = json.loads(out.stdout.strip().splitlines()[-1]) | {"run": label, "process_s": time.perf_counter() - t}
        print(json.dumps(row))
        runs.append(row)
    return runs


if __name__ == "__main__":
    main()
