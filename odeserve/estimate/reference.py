"""A classical solution of the same parsed equations, to measure a trained network against.

- Initial-value problems (every condition linear, all at one point, fixing the whole state):
  ``solve_ivp`` with DOP853 at rtol 1e-12, switching to Radau when the problem is stiff (DOP853
  exceeds a step budget), integrated from that point towards both ends of the domain.
- Two-point problems (conditions at the ends only, any form): ``solve_bvp``, seeded with the
  trained network, so that it converges to the same branch when there are several.
- A singular point where the integration starts (``2/x*y'`` at x = 0) is stepped over: the
  solver starts a hair inside the domain from the network's values there.

Each solve runs twice, at two tolerances; their difference bounds the reference's own error
(``uncertainty``). A time guard aborts a solve that would take too long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from odeserve.estimate.system import FirstOrderSystem, NotApplicable, TimeGuard, first_order_system
from odeserve.evaluate import evaluate
from odeserve.expr.keys import Key
from odeserve.problem import Problem

Probe = Callable[[np.ndarray, int], list[np.ndarray]]

#: Relative size of the step over a singular end point.
_HAIR = 1e-7
#: Right-hand-side evaluations of DOP853 before the problem counts as stiff.
_STIFF_NFEV = 50_000


@dataclass(frozen=True)
class Reference:
    solver: str
    values: np.ndarray  # (n, m) on the requested grid
    uncertainty: float  # relative L2 difference between the two tolerances


def classical_reference(problem: Problem, probe: Probe, xs: np.ndarray, guard_s: float = 5.0) -> Reference:
    """The classical solution on ``xs``; raises :class:`NotApplicable` with the reason."""
    system = first_order_system(problem, probe)
    guard = TimeGuard(guard_s)
    start = _initial_point(problem, system)
    if start is not None:
        solve = lambda tight, hint: _ivp(system, probe, xs, start, guard, tight, hint)  # noqa: E731
    elif _two_point(problem):
        solve = lambda tight, hint: _bvp(system, probe, xs, guard, tight)  # noqa: E731
    else:
        raise NotApplicable("conditions at interior points, or not enough of them at one point")
    solver, fine = solve(True, "")
    _, coarse = solve(False, solver)  # a stiff problem goes straight to the implicit method
    norm = float(np.linalg.norm(fine)) or 1.0
    return Reference(solver, fine, float(np.linalg.norm(fine - coarse)) / norm)


def _initial_point(problem: Problem, system: FirstOrderSystem) -> tuple[float, np.ndarray] | None:
    """(p, y0) when the conditions are linear, all at one point p, and fix the whole state."""
    points = {k.point for c in problem.conditions for k in c.keys}
    if len(points) != 1 or any(c.linear is None for c in problem.conditions):
        return None
    index = {key: i for i, key in enumerate(system.slots)}
    M = np.zeros((len(problem.conditions), len(system.slots)))
    rhs = np.zeros(len(problem.conditions))
    for i, c in enumerate(problem.conditions):
        assert c.linear is not None
        for key, coef in c.linear.coeffs.items():
            M[i, index[key.deriv]] += coef
        rhs[i] = -c.linear.constant
    if M.shape[0] != M.shape[1] or abs(np.linalg.det(M)) < 1e-12:
        return None
    return points.pop(), np.linalg.solve(M, rhs)


def _two_point(problem: Problem) -> bool:
    a, b = problem.domain
    tol = 1e-12 * (b - a)
    return all(abs(k.point - a) <= tol or abs(k.point - b) <= tol for c in problem.conditions for k in c.keys)


def _finite_at(f: Callable[[float, np.ndarray], np.ndarray], x: float, y: np.ndarray) -> bool:
    with np.errstate(all="ignore"):
        return bool(np.all(np.isfinite(f(x, y))))


def _ivp(
    system: FirstOrderSystem,
    probe: Probe,
    xs: np.ndarray,
    start: tuple[float, np.ndarray],
    guard: TimeGuard,
    tight: bool,
    hint: str,
) -> tuple[str, np.ndarray]:
    p, y0 = start
    f = system.rhs(guard)
    out = np.empty((xs.shape[0], len(system.slots)))
    solver = "solve_ivp/Radau" if hint == "solve_ivp/Radau" else "solve_ivp/DOP853"
    for end in system.problem.domain:
        side = (xs <= p) if end < p else (xs >= p)
        if end != p and side.any():
            out[side], solver = _side(system, probe, f, start, end, xs[side], solver, 1e-12 if tight else 1e-10)
    return solver, _values(system, out)


def _side(
    system: FirstOrderSystem,
    probe: Probe,
    f: Callable[..., np.ndarray],
    start: tuple[float, np.ndarray],
    end: float,
    grid: np.ndarray,
    solver: str,
    rtol: float,
) -> tuple[np.ndarray, str]:
    """The state on ``grid`` (ascending, between the initial point and ``end``), integrated from
    the initial point. A singular initial point is stepped over (from the network's values a hair
    inside); a singular end is stopped a hair short of, its value taken from there."""
    from scipy.integrate import solve_ivp

    p, y0 = start
    order = system.problem.max_order
    net = lambda x: system.state_of(probe(np.atleast_1d(x), order))  # noqa: E731
    x0, s0, x1 = p, y0, end
    if not _finite_at(f, p, y0):
        x0 = p + _HAIR * (end - p)
        s0 = net(x0)[:, 0]
    if not _finite_at(f, end, net(end)[:, 0]):
        x1 = end - _HAIR * (end - p)
    sign = 1.0 if end > p else -1.0
    inside = ((grid - x0) * sign > 0) & ((x1 - grid) * sign >= 0)
    t_eval = grid[inside] if sign > 0 else grid[inside][::-1]
    t_eval = np.append(t_eval, x1) if x1 != end else t_eval  # a singular end: its value from just before
    atol = 1e-14 * max(1.0, float(np.max(np.abs(y0))))
    try:
        if solver == "solve_ivp/Radau":
            raise _Stiff
        sol = solve_ivp(_count(f, _STIFF_NFEV), (x0, x1), s0, method="DOP853", rtol=rtol, atol=atol, t_eval=t_eval)
    except _Stiff:
        solver = "solve_ivp/Radau"
        sol = solve_ivp(f, (x0, x1), s0, method="Radau", rtol=rtol * 100, atol=atol * 100, t_eval=t_eval)
    if sol.status != 0 or sol.y.shape[1] != t_eval.shape[0]:
        raise NotApplicable(f"solve_ivp failed: {sol.message}")
    vals = np.empty((grid.shape[0], len(system.slots)))
    ys = sol.y.T
    if x1 != end:
        ys, vals[~inside & (grid != p)] = ys[:-1], ys[-1]
    vals[inside] = ys if sign > 0 else ys[::-1]
    vals[grid == p] = y0
    return vals, solver


class _Stiff(Exception):
    pass


def _count(f: Callable[..., np.ndarray], limit: int) -> Callable[..., np.ndarray]:
    calls = [0]

    def counted(x: float, y: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] > limit:
            raise _Stiff
        return f(x, y)

    return counted


def _values(system: FirstOrderSystem, state: np.ndarray) -> np.ndarray:
    """(n, m): the unknowns' values from the state (n, S)."""
    cols = [system.slots.index((u, 0)) for u in system.problem.unknowns]
    return state[:, cols]


def _bvp(
    system: FirstOrderSystem, probe: Probe, xs: np.ndarray, guard: TimeGuard, tight: bool
) -> tuple[str, np.ndarray]:
    from scipy.integrate import solve_bvp

    problem = system.problem
    a, b = problem.domain
    f = system.rhs(guard)
    mesh = np.linspace(a, b, 201)
    y_guess = system.state_of(probe(mesh, problem.max_order))
    if not _finite_at(lambda x, y: f(np.array([x]), y[:, None]), a, y_guess[:, 0]):
        mesh[0] = a + _HAIR * (b - a)
    if not _finite_at(lambda x, y: f(np.array([x]), y[:, None]), b, y_guess[:, -1]):
        mesh[-1] = b - _HAIR * (b - a)
    y_guess = system.state_of(probe(mesh, problem.max_order))
    index = {key: i for i, key in enumerate(system.slots)}

    def bc(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
        out = []
        for c in problem.conditions:
            env: dict[Key, float] = {
                k: (ya if abs(k.point - a) < abs(k.point - b) else yb)[index[k.deriv]] for k in c.keys
            }
            out.append(float(evaluate(c.residual, env, np.zeros(1))[0]))
        return np.array(out)

    tol = 1e-9 if tight else 1e-7
    sol = solve_bvp(f, bc, mesh, y_guess, tol=tol, max_nodes=50_000)
    if sol.status != 0:
        raise NotApplicable(f"solve_bvp did not converge: {sol.message}")
    inside = np.clip(xs, mesh[0], mesh[-1])
    return "solve_bvp", _values(system, sol.sol(inside).T)
