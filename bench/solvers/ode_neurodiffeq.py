"""NeuroDiffEq as its docs show: Solver1D, FCNN (32, 32) per unknown, its hard-constraint
conditions (IVP, DirichletBVP), Adam, float64. It has no Neumann/Robin condition (its #160)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import Result, Tracker
from bench.solvers.peer_common import equation_residuals
from odeserve.problem import load_problem

EPOCHS = 5000
CHUNK = 100


def _conditions(problem):
    from neurodiffeq.conditions import IVP, DirichletBVP

    out = []
    for u in problem.unknowns:
        forms = [c.linear for c in problem.conditions if c.linear and {k[0] for k in c.linear.coeffs} == {u}]
        if len(forms) != problem.orders[u] or any(len(f.coeffs) != 1 for f in forms):
            return None
        items = sorted((next(iter(f.coeffs)), -f.constant / next(iter(f.coeffs.values()))) for f in forms)
        points = {k[2] for k, _ in items}
        orders = [k[1] for k, _ in items]
        if len(points) == 1 and orders == list(range(len(orders))):
            values = [v for _, v in items]
            out.append(IVP(items[0][0][2], *values))
        elif len(points) == 2 and orders == [0, 0]:
            (k0, v0), (k1, v1) = sorted(items, key=lambda kv: kv[0][2])
            out.append(DirichletBVP(k0[2], v0, k1[2], v1))
        else:
            return None
    return out


def run(name: str, spec: dict[str, Any]) -> Result:
    import torch
    from neurodiffeq import diff
    from neurodiffeq.networks import FCNN
    from neurodiffeq.solvers import Solver1D

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    problem = load_problem(spec)
    conditions = _conditions(problem)
    if conditions is None:
        return Result(name, "neurodiffeq", skipped="no NeuroDiffEq condition for Neumann/Robin (its issue #160)")
    a, b = problem.domain
    m = len(problem.unknowns)

    def system(*args):
        *us, t = args

        def d(j, k):
            return (us[j] if k == 0 else diff(us[j], t, order=k))[:, 0]

        return [r.unsqueeze(1) for r in equation_residuals(problem, t[:, 0], d)]

    nets = [FCNN(n_input_units=1, n_output_units=1, hidden_units=(32, 32)) for _ in range(m)]
    solver = Solver1D(system, conditions, t_min=a, t_max=b, nets=nets)

    def predict(xs):
        sol = solver.get_solution(best=False)
        outs = sol(torch.as_tensor(xs), to_numpy=True)
        outs = outs if isinstance(outs, list) else [outs]
        return np.stack([np.asarray(o).reshape(-1) for o in outs], axis=1)

    tracker = Tracker(problem)
    tracker.start = __import__("time").perf_counter()
    for _ in range(EPOCHS // CHUNK):
        solver.fit(max_epochs=CHUNK)
        tracker.check(predict)
    return tracker.result("neurodiffeq", name, predict, EPOCHS)
