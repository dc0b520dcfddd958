"""``python -m bench.one SOLVER PROBLEM``: one benchmark run in a fresh process, as JSON.

Each (solver, problem) pair runs in its own interpreter so that no solver inherits another's
global torch state (default dtype, threads, seeds, allocator)."""

from __future__ import annotations

import importlib
import json
import sys

import torch

from bench.common import Result
from odeserve.examples import public_problems

SOLVERS = {
    "odeserve": "bench.solvers.ode_odeserve",
    "deepxde": "bench.solvers.ode_deepxde",
    "neurodiffeq": "bench.solvers.ode_neurodiffeq",
    "plain_torch": "bench.solvers.ode_plain_torch",
    "scipy": "bench.solvers.ode_scipy",
}
REQUIRES = {"deepxde": "deepxde", "neurodiffeq": "neurodiffeq", "scipy": "scipy"}
MARK = "BENCH-RESULT "


def run(solver: str, name: str) -> Result:
    need = REQUIRES.get(solver)
    if need is not None and importlib.util.find_spec(need) is None:
        return Result(name, solver, skipped=f"{need} not installed (pip install -e .[bench])")
    return importlib.import_module(SOLVERS[solver]).run(name, public_problems()[name])


if __name__ == "__main__":
    torch.set_num_threads(2)
    result = run(sys.argv[1], sys.argv[2])
    print(MARK + json.dumps(result.to_json()), flush=True)
