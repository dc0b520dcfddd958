"""The plain PyTorch approach of the well-known question: a 1-10-1 sigmoid network, derivatives
by nested torch.autograd.grad, conditions as penalties, Adam. The baseline users start from."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import Result, Tracker
from bench.solvers.peer_common import condition_residual, equation_residuals
from odeserve.problem import load_problem

ITERATIONS = 5000
POINTS = 100


def run(name: str, spec: dict[str, Any]) -> Result:
    import torch

    torch.manual_seed(0)
    problem = load_problem(spec)
    a, b = problem.domain
    m = len(problem.unknowns)
    net = torch.nn.Sequential(torch.nn.Linear(1, 10), torch.nn.Sigmoid(), torch.nn.Linear(10, m)).double()
    x = torch.linspace(a, b, POINTS, dtype=torch.float64).reshape(-1, 1).requires_grad_(True)
    cond_points = sorted({k[2] for c in problem.conditions for k in c.residual.keys})
    xc = torch.tensor(cond_points, dtype=torch.float64).reshape(-1, 1).requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def derivatives(xx):
        y = net(xx)
        table = {}
        for j in range(m):
            d = y[:, j : j + 1]
            table[(j, 0)] = d[:, 0]
            for k in range(1, max(problem.orders.values()) + 1):
                (d,) = torch.autograd.grad(d.sum(), xx, create_graph=True)
                table[(j, k)] = d[:, 0]
        return table

    def predict(xs):
        with torch.no_grad():
            return net(torch.as_tensor(xs).reshape(-1, 1)).numpy()

    tracker = Tracker(problem)
    tracker.start = __import__("time").perf_counter()
    for it in range(ITERATIONS):
        opt.zero_grad()
        d = derivatives(x)
        res = equation_residuals(problem, x[:, 0], lambda j, k: d[(j, k)])
        dc = derivatives(xc)
        loss = sum((r**2).mean() for r in res)
        for c in problem.conditions:
            loss = loss + condition_residual(problem, c, lambda j, k, p: dc[(j, k)][cond_points.index(p)]) ** 2
        loss.backward()
        opt.step()
        if it % 50 == 0:
            tracker.check(predict)
    return tracker.result("plain_torch", name, predict, ITERATIONS)


__all__ = ["run", "np"]
