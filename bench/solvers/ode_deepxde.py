"""DeepXDE, PyTorch backend, the way its ODE examples do it: 3 x 50 tanh, Glorot, Adam (lr 1e-3)
then L-BFGS, float64. Conditions as PointSetOperatorBC (values and derivatives at a point)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.common import Result, Tracker
from bench.solvers.peer_common import condition_residual, equation_residuals, single_point_conditions
from odeserve.problem import load_problem

ADAM_ITERATIONS = 5000
LBFGS_MAX_ITERATIONS = 15000
NUM_DOMAIN = 100


def run(name: str, spec: dict[str, Any]) -> Result:
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import deepxde as dde
    import torch

    problem = load_problem(spec)
    if not single_point_conditions(problem):
        return Result(name, "deepxde", skipped="conditions spanning two points need a custom BC")
    dde.config.set_default_float("float64")
    dde.config.set_random_seed(0)
    torch.set_default_dtype(torch.float64)
    a, b = problem.domain
    m = len(problem.unknowns)

    def nth(y, x, j, k):
        out = y[:, j : j + 1]
        for _ in range(k):
            out = dde.grad.jacobian(out, x, i=0, j=0)
        return out

    def ode(x, y):
        res = equation_residuals(problem, x[:, 0], lambda j, k: nth(y, x, j, k)[:, 0])
        return [r.unsqueeze(1) for r in res]

    bcs = []
    for cond in problem.conditions:
        point = next(iter(cond.residual.keys))[2]

        def func(inputs, outputs, X, cond=cond):
            derivs = {}

            def at(j, k, p):
                if (j, k) not in derivs:
                    derivs[(j, k)] = nth(outputs, inputs, j, k)[:, 0]
                return derivs[(j, k)]

            return condition_residual(problem, cond, at).reshape(-1, 1)

        bcs.append(dde.icbc.PointSetOperatorBC(np.array([[point]]), np.zeros((1, 1)), func))

    geom = dde.geometry.TimeDomain(a, b)
    data = dde.data.PDE(geom, ode, bcs, num_domain=NUM_DOMAIN, num_boundary=2, num_test=200)
    net = dde.nn.FNN([1, 50, 50, 50, m], "tanh", "Glorot uniform")
    model = dde.Model(data, net)
    tracker = Tracker(problem)

    def predict(xs):
        return model.predict(xs.reshape(-1, 1))

    class Track(dde.callbacks.Callback):
        def on_epoch_end(self) -> None:
            if model.train_state.step % 50 == 0:
                tracker.check(predict)

    model.compile("adam", lr=1e-3)
    tracker.start = __import__("time").perf_counter()
    model.train(iterations=ADAM_ITERATIONS, callbacks=[Track()], display_every=10**9, verbose=0)
    dde.optimizers.config.set_LBFGS_options(maxiter=LBFGS_MAX_ITERATIONS)
    dde.optimizers.config.LBFGS_options["iter_per_step"] = 50
    model.compile("L-BFGS")
    model.train(callbacks=[Track()], display_every=10**9, verbose=0)
    return tracker.result("deepxde", name, predict, int(model.train_state.step))
