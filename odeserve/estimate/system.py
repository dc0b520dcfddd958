"""The parsed equations as a first-order system y' = f(x, y), for the classical solvers.

The state holds every unknown's derivatives below its order (``slots``); the equations are solved
for the highest derivatives, which works when they enter linearly (checked numerically at sample
points): ``r(x, state, top) = A(x, state) top + b(x, state)``. Equations that are not linear in
their highest derivatives, or algebraic unknowns (order 0), have no such system: the estimate
then falls back to the residual-based one. No second parser: the compiled programs of
:mod:`odeserve.problem` are evaluated with :mod:`odeserve.evaluate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from odeserve.evaluate import NUMPY, evaluate
from odeserve.expr.keys import DerivKey, Key
from odeserve.problem import Problem

#: Highest derivatives count as linear when the probe differs from the linear model by less.
_LINEARITY_TOL = 1e-7


class NotApplicable(Exception):
    """The classical reference does not apply to this problem (the reason is the message)."""


class TimeGuard:
    """Raises :class:`NotApplicable` from inside a solver's right-hand side past the deadline."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.perf_counter() > self.deadline:
            raise NotApplicable(f"the classical solution took longer than its {self.seconds:g} s guard")


@dataclass(frozen=True)
class FirstOrderSystem:
    problem: Problem
    slots: tuple[DerivKey, ...]  # the state's entries: (unknown, order) below each unknown's order

    def _residuals(self, x: np.ndarray, state: np.ndarray, top: np.ndarray) -> np.ndarray:
        """(n_eq, n): equation residuals at points x with state (S, n) and highest derivatives (m, n)."""
        p = self.problem
        env: dict[Key, np.ndarray] = {p.variable: x}
        for i, key in enumerate(self.slots):
            env[key] = state[i]
        for j, u in enumerate(p.unknowns):
            env[DerivKey(u, p.orders[u])] = top[j]
        return np.stack([evaluate(e.residual, env, x) for e in p.equations])

    def _linear_model(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A (n, m, m), b (n, m)) with r = A top + b: the m + 1 probes (top = 0, then each unit
        vector) in one evaluation per equation, side by side along the points."""
        m, n = len(self.problem.unknowns), x.shape[0]
        top = np.zeros((m, (m + 1) * n))
        for j in range(m):
            top[j, (j + 1) * n : (j + 2) * n] = 1.0
        r = self._residuals(np.tile(x, m + 1), np.tile(state, (1, m + 1)), top).reshape(-1, m + 1, n)
        b = r[:, 0]
        with np.errstate(invalid="ignore"):  # a coefficient undefined at a point (log(x - 1)): NaN, checked by callers
            A = (r[:, 1:] - b[:, None, :]).transpose(2, 0, 1)  # (n, eq, unknown)
        return A, b.T

    def highest(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        """(m, n): the highest derivatives solved from the equations."""
        A, b = self._linear_model(x, state)
        with np.errstate(all="ignore"):
            top = np.linalg.solve(A, -b[:, :, None])[:, :, 0]
        return top.T

    def highest_at(self, x: float, state: np.ndarray) -> np.ndarray:
        """(m,): the highest derivatives at one point, on scalars (a solver's usual call: the
        array path's overhead would dominate)."""
        p = self.problem
        env: dict[Key, float] = {p.variable: x}
        env.update((key, float(v)) for key, v in zip(self.slots, state))
        tops = [DerivKey(u, p.orders[u]) for u in p.unknowns]
        m = len(tops)

        def residuals(top: list[float]) -> np.ndarray:
            env.update(zip(tops, top))
            return np.array([float(e.residual.run(env, NUMPY)) for e in p.equations])

        with np.errstate(all="ignore"):
            b = residuals([0.0] * m)
            A = np.column_stack([residuals([float(i == j) for i in range(m)]) - b for j in range(m)])
            if m == 1:
                return -b / A[0]
            try:
                return np.linalg.solve(A, -b)
            except np.linalg.LinAlgError:
                return np.full(m, np.nan)

    def rhs(self, guard: TimeGuard) -> Callable[[float | np.ndarray, np.ndarray], np.ndarray]:
        """f(x, y) for scipy: y of shape (S,) or (S, n); vectorised in x."""
        index = {key: i for i, key in enumerate(self.slots)}
        p = self.problem

        def f(x: float | np.ndarray, y: np.ndarray) -> np.ndarray:
            guard.check()
            flat = y.ndim == 1
            if flat and np.ndim(x) == 0:
                top1 = self.highest_at(float(x), y)
                return np.array(
                    [
                        y[index[DerivKey(u, k + 1)]] if k + 1 < p.orders[u] else top1[p.unknowns.index(u)]
                        for u, k in self.slots
                    ]
                )
            state = y.reshape(len(self.slots), -1)
            xs = np.broadcast_to(np.asarray(x, dtype=float), state.shape[1:]).copy()
            try:
                top = self.highest(xs, state)
            except np.linalg.LinAlgError:
                top = np.full((len(p.unknowns), state.shape[1]), np.nan)
            out = np.empty_like(state)
            for i, (u, k) in enumerate(self.slots):
                out[i] = state[index[DerivKey(u, k + 1)]] if k + 1 < p.orders[u] else top[p.unknowns.index(u)]
            return out[:, 0] if flat else out

        return f

    def state_of(self, derivs: list[np.ndarray]) -> np.ndarray:
        """(S, n): the state from a solution's derivatives ``[y, y', ...]`` (each (n, m))."""
        return np.stack([derivs[k][:, self.problem.unknowns.index(u)] for u, k in self.slots])


def first_order_system(problem: Problem, probe: Callable[[np.ndarray, int], list[np.ndarray]]) -> FirstOrderSystem:
    """The problem as y' = f(x, y); ``probe`` (the trained solution's derivatives) supplies realistic
    states for the linearity check. Raises :class:`NotApplicable`."""
    if any(problem.orders[u] < 1 for u in problem.unknowns):
        raise NotApplicable("an unknown appears without derivatives (algebraic equation)")
    slots = tuple(DerivKey(u, k) for u in problem.unknowns for k in range(problem.orders[u]))
    system = FirstOrderSystem(problem, slots)
    a, b = problem.domain
    x = np.linspace(a, b, 9)[1:-1]  # inside: ends may be singular points
    derivs = probe(x, problem.max_order)
    state = system.state_of(derivs)
    A, b0 = system._linear_model(x, state)
    m = len(problem.unknowns)
    rng = np.random.default_rng(0)
    for scale in (1.0, 100.0):
        top = rng.standard_normal((m, x.shape[0])) * scale
        got = system._residuals(x, state, top).T
        want = b0 + np.einsum("nij,jn->ni", A, top)
        size = np.abs(got) + np.abs(want) + 1.0
        if not np.all(np.isfinite(got)) or np.max(np.abs(got - want) / size) > _LINEARITY_TOL:
            raise NotApplicable("the equations are not linear in the highest derivatives")
    if not np.all(np.isfinite(A)) or np.min(np.abs(np.linalg.det(A))) == 0.0:
        raise NotApplicable("the equations cannot be solved for the highest derivatives")
    return system
