"""scipy as the classical reference: solve_ivp (DOP853, rtol 1e-12) when every condition sits at
one point, solve_bvp (tol 1e-10) when they sit at the two ends of the domain."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import Result, errors, eval_grid, exact_values
from odeserve.evaluate import evaluate
from odeserve.problem import load_problem


def _highest(problem, x, state):
    """Solve the equations for the highest derivatives (they enter linearly in these problems)."""
    us, orders = problem.unknowns, problem.orders
    n = len(np.atleast_1d(x))

    def residuals(top):
        env = {problem.variable: x}
        i = 0
        for j, u in enumerate(us):
            for k in range(orders[u]):
                env[(u, k)] = state[i]
                i += 1
            env[(u, orders[u])] = top[j]
        return np.stack([np.broadcast_to(evaluate(e.residual, env, np.zeros(n)), (n,)) for e in problem.equations])

    zero = [np.zeros(n)] * len(us)
    base = residuals(zero)
    cols = []
    for j in range(len(us)):
        unit = list(zero)
        unit[j] = np.ones(n)
        cols.append(residuals(unit) - base)
    A = np.stack(cols, axis=1)  # (eq, unknown, n)
    return np.stack([np.linalg.solve(A[:, :, i], -base[:, i]) for i in range(n)], axis=1)


def _rhs(problem):
    us, orders = problem.unknowns, problem.orders

    def f(x, state):
        state = np.asarray(state).reshape(sum(orders.values()), -1)
        top = _highest(problem, np.atleast_1d(x) * np.ones(state.shape[1]), list(state))
        out, i = [], 0
        for j, u in enumerate(us):
            for k in range(orders[u]):
                out.append(state[i + 1] if k + 1 < orders[u] else top[j])
                i += 1
        return np.array(out)

    return f


def run(name: str, spec: dict[str, Any]) -> Result:
    from scipy.integrate import solve_bvp, solve_ivp

    problem = load_problem(spec)
    a, b = problem.domain
    xs = eval_grid(problem)
    exact = exact_values(problem, xs)
    points = {k[2] for c in problem.conditions for k in c.residual.keys}
    forms = [c.linear for c in problem.conditions]
    slots = [(u, k) for u in problem.unknowns for k in range(problem.orders[u])]
    f = _rhs(problem)
    t0 = time.perf_counter()
    if len(points) == 1 and all(f_ and len(f_.coeffs) == 1 for f_ in forms):
        p = points.pop()
        y0 = np.zeros(len(slots))
        for form in forms:
            ((key, coef),) = form.coeffs.items()
            y0[slots.index(key[:2])] = -form.constant / coef
        pred = np.zeros((len(xs), len(slots)))
        for lo, hi in ((p, a), (p, b)):
            if hi == lo:
                continue
            grid = xs[(xs <= lo) if hi < lo else (xs >= lo)]
            sol = solve_ivp(
                lambda x, y: f(x, y)[:, 0],
                (lo, hi),
                y0,
                method="DOP853",
                rtol=1e-12,
                atol=1e-12,
                t_eval=grid[::-1] if hi < lo else grid,
                dense_output=True,
            )
            vals = sol.sol(grid).T
            pred[(xs <= lo) if hi < lo else (xs >= lo)] = vals
        method = "solve_ivp"
    elif points <= {a, b}:

        def bc(ya, yb):
            out = []
            for cond in problem.conditions:
                env = {}
                for key in cond.residual.keys:
                    vec = ya if key[2] == a else yb
                    env[key] = vec[slots.index(key[:2])]
                out.append(float(evaluate(cond.residual, env, np.zeros(1))[0]))
            return np.array(out)

        mesh = np.linspace(a, b, 50)
        sol = solve_bvp(f, bc, mesh, np.zeros((len(slots), len(mesh))), tol=1e-10, max_nodes=100000)
        pred = sol.sol(xs).T
        method = "solve_bvp"
    else:
        return Result(name, "scipy", skipped="conditions at interior points")
    elapsed = time.perf_counter() - t0
    cols = [slots.index((u, 0)) for u in problem.unknowns]
    rel, mx = errors(pred[:, cols], exact)
    return Result(name, "scipy", rel, mx, elapsed, None, {}, note=method)
