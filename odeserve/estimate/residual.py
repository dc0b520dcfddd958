"""The residual-based estimate: the network's residual propagated through the linearised problem.

With y the trained solution and y* the true one, e = y* - y satisfies, to first order,
``L e = -r`` (L: the equations linearised at y, r: their residual at y) together with the
linearised conditions (right-hand side: minus the conditions' residuals). This module solves that
linear problem by Chebyshev collocation (a rectangular least-squares system, so that conditions
anywhere, of any form, simply add rows), and reports e: for a linear problem it is the error
itself up to the collocation's (spectral) accuracy; for a nonlinear one its first-order part.

Calibration: on the public problems and the hard set it lands within a factor of about two of
the true error where the solution is resolved; the reported numbers are multiplied by
:data:`FACTOR` so that it errs on the pessimistic side. Where the linearised problem is singular
(e.g. a periodic problem with a non-trivial kernel) there is no estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from odeserve.estimate.system import NotApplicable
from odeserve.evaluate import equation_env, evaluate
from odeserve.expr.keys import DerivKey, Key, PointKey
from odeserve.expr.program import Program
from odeserve.problem import Problem

Probe = Callable[[np.ndarray, int], list[np.ndarray]]

#: Chebyshev nodes tried in turn (N + 1 points) until the correction is resolved.
NODE_LADDER = (128, 256, 512)
#: Most unknowns x nodes of one least-squares system.
MAX_COLUMNS = 2100
#: A correction counts as resolved when its last Chebyshev coefficients are this small.
RESOLVED = 1e-3
#: A correction below this fraction of the solution's size counts as resolved.
NEGLIGIBLE = 1e-9
#: Newton steps at most (for linear problems one step is exact).
NEWTON_STEPS = 8
#: A Newton step this many float64 ulps of the solution's largest value, or less, is round-off.
ROUND_OFF_ULPS = 64
#: Safety factor on the linearised correction (pessimistic side).
FACTOR = 3.0
#: Weight of a condition row against one collocation row.
_CONDITION_WEIGHT = 1e3


class Unreliable(NotApplicable):
    """The residual estimate cannot be trusted (unresolved, or Newton does not converge)."""


def chebyshev(n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev-Lobatto nodes on [a, b] and the first-derivative matrix (Trefethen's cheb)."""
    t = np.cos(np.pi * np.arange(n + 1) / n)
    c = np.ones(n + 1)
    c[0] = c[-1] = 2.0
    c *= (-1.0) ** np.arange(n + 1)
    dt = t[:, None] - t[None, :]
    D = np.outer(c, 1.0 / c) / (dt + np.eye(n + 1))
    D -= np.diag(D.sum(axis=1))
    return 0.5 * (a + b) + 0.5 * (b - a) * t, D * (2.0 / (b - a))


def interpolation_matrix(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), len(nodes)): barycentric interpolation from Chebyshev-Lobatto nodes."""
    w = (-1.0) ** np.arange(nodes.shape[0])
    w[0] *= 0.5
    w[-1] *= 0.5
    diff = x[:, None] - nodes[None, :]
    exact = np.isclose(diff, 0.0, atol=1e-14 * (np.ptp(nodes) or 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = w / diff
        M = terms / terms.sum(axis=1, keepdims=True)
    hit = exact.any(axis=1)
    M[hit] = exact[hit].astype(float)
    return M


def _sensitivity(program: Program, env: dict[Key, np.ndarray], key: Key, like: np.ndarray) -> np.ndarray:
    """d program / d env[key] by a central difference."""
    v = np.asarray(env[key], dtype=float)
    h = 1e-6 * (1.0 + np.abs(v))
    up, down = dict(env), dict(env)
    up[key], down[key] = v + h, v - h
    with np.errstate(invalid="ignore"):  # NaN where the program is undefined: the caller checks finiteness
        return (evaluate(program, up, like) - evaluate(program, down, like)) / (2.0 * h)


def linearized_correction(problem: Problem, probe: Probe, xs: np.ndarray) -> np.ndarray:
    """(len(xs), m): the error e = y* - y on xs, by Newton steps on the collocation system from
    the network. Accepted when resolved and, where a finer grid fits, confirmed by it (an
    ill-conditioned problem amplifies the discretisation error past what the tail shows).
    Raises :class:`NotApplicable` (singular) or :class:`Unreliable`."""
    sizes = ladder(len(problem.unknowns))
    previous: np.ndarray | None = None
    for n in sizes:
        nodes, e = _newton(problem, probe, n)
        y = probe(nodes, 0)[0]
        on_xs = interpolation_matrix(nodes, xs) @ e
        resolved = (tail(e) <= RESOLVED or _negligible(e, y)) and _solution_resolved(y + e, e)
        if resolved and (len(sizes) == 1 or (previous is not None and _agree(previous, on_xs, y))):
            return on_xs
        previous = on_xs if resolved else None
    raise Unreliable(f"the solution or the correction is not resolved (or confirmed) by {n + 1} Chebyshev nodes")


def ladder(m: int) -> list[int]:
    """The node counts (N, for N + 1 nodes) of :data:`NODE_LADDER` that fit m unknowns."""
    return [n for n in NODE_LADDER if m * (n + 1) <= MAX_COLUMNS] or [NODE_LADDER[0]]


def _agree(coarse: np.ndarray, fine: np.ndarray, y: np.ndarray) -> bool:
    """Two grids' corrections agree to 30 %, or both are at round-off level."""
    gap = float(np.linalg.norm(coarse - fine))
    return gap <= 0.3 * float(np.linalg.norm(fine)) or gap <= NEGLIGIBLE * float(np.linalg.norm(y))


def _solution_resolved(y: np.ndarray, e: np.ndarray) -> bool:
    """The collocation solution itself is resolved well below the correction: its Chebyshev tail
    (the discretisation error) is under a tenth of the correction, or at round-off level."""
    relative = tail(y)
    return relative * float(np.max(np.abs(y))) <= 0.1 * float(np.max(np.abs(e))) or relative <= NEGLIGIBLE


def _negligible(e: np.ndarray, y: np.ndarray) -> bool:
    """A correction at round-off level (its coefficients are noise, resolved or not)."""
    return bool(np.max(np.abs(e)) <= NEGLIGIBLE * max(float(np.max(np.abs(y))), 1e-300))


def tail(e: np.ndarray) -> float:
    """Size of the last eighth of the Chebyshev coefficients of e (n + 1, m) against the largest."""
    from scipy.fft import dct

    c = np.abs(dct(e, type=1, axis=0))
    top = float(np.max(c))
    return float(np.max(c[-max(c.shape[0] // 8, 2) :])) / top if top > 0 else 0.0


def _newton(problem: Problem, probe: Probe, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, e (n + 1, m)): Newton on the collocation equations, started at the network."""
    nodes, Dk = derivative_matrices(problem, n_nodes)
    base = probe(nodes, problem.max_order)
    total = np.zeros_like(base[0])
    for _ in range(NEWTON_STEPS):
        derivs = [d + Dk[k] @ total for k, d in enumerate(base)]
        step = _linear_step(problem, probe, nodes, Dk, derivs, total)
        total = total + step
        if np.linalg.norm(step) <= 1e-3 * np.linalg.norm(total) or not np.any(total) or _round_off(step, base[0]):
            return nodes, total
    raise Unreliable("Newton's method on the collocation equations does not converge from the network")


def _round_off(step: np.ndarray, y: np.ndarray) -> bool:
    """A Newton step in the last bits of the solution (a few ulps of its largest value): converged
    as far as float64 can tell. (A correction itself at round-off, as for a network within 1e-14,
    has steps that are noise, never 1e-3 of it.)"""
    return bool(np.max(np.abs(step)) <= ROUND_OFF_ULPS * np.finfo(np.float64).eps * float(np.max(np.abs(y))))


def derivative_matrices(problem: Problem, n_nodes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Chebyshev-Lobatto nodes on the domain and the matrices of derivatives 0..max_order."""
    nodes, D = chebyshev(n_nodes, *problem.domain)
    Dk = [np.eye(nodes.shape[0])]
    for _ in range(problem.max_order):
        Dk.append(D @ Dk[-1])
    return nodes, Dk


def _linear_step(
    problem: Problem, probe: Probe, nodes: np.ndarray, Dk: list[np.ndarray], derivs: list[np.ndarray], total: np.ndarray
) -> np.ndarray:
    """One Newton step (n + 1, m) of the collocation system at the state ``derivs``."""
    m = len(problem.unknowns)
    A, r = linear_system(problem, probe, nodes, Dk, derivs, total)
    e, _, rank, _ = np.linalg.lstsq(A, r, rcond=1e-13)
    if rank < A.shape[1]:
        raise NotApplicable("the linearised problem is singular")
    return e.reshape(m, nodes.shape[0]).T


def linear_system(
    problem: Problem, probe: Probe, nodes: np.ndarray, Dk: list[np.ndarray], derivs: list[np.ndarray], total: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(A, r): the collocation equations linearised at the state ``derivs`` (rows: each equation
    at every node, then one row per condition, weighted), and minus their residuals; the
    columns are the nodal corrections, unknown by unknown."""
    n, m = nodes.shape[0], len(problem.unknowns)
    env = equation_env(problem.variable, problem.unknowns, nodes, derivs)
    rows, rhs = [], []
    for eq in problem.equations:
        block = np.zeros((n, n * m))
        for key in eq.residual.keys:
            if isinstance(key, DerivKey):
                j = problem.unknowns.index(key.unknown)
                block[:, j * n : (j + 1) * n] += _sensitivity(eq.residual, env, key, nodes)[:, None] * Dk[key.order]
        rows.append(block)
        rhs.append(-evaluate(eq.residual, env, nodes))
    for cond in problem.conditions:
        row, value = _condition_row(problem, cond.residual, cond.keys, probe, nodes, Dk, total)
        scale = _CONDITION_WEIGHT / max(float(np.max(np.abs(row))), 1e-300)
        rows.append(row[None, :] * scale)
        rhs.append(np.array([-value * scale]))
    A, r = np.concatenate(rows), np.concatenate(rhs)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(r))):
        raise NotApplicable("the residual or its linearisation is not finite on the collocation grid")
    return A, r


def _condition_row(
    problem: Problem,
    program: Program,
    keys: list[PointKey],
    probe: Probe,
    nodes: np.ndarray,
    Dk: list[np.ndarray],
    total: np.ndarray,
) -> tuple[np.ndarray, float]:
    """The linearised condition (a row over the nodal corrections) and its residual at y + total."""
    n, m = nodes.shape[0], len(problem.unknowns)
    env: dict[Key, np.ndarray] = {}
    at: dict[PointKey, np.ndarray] = {}
    for key in keys:
        j = problem.unknowns.index(key.unknown)
        at[key] = (interpolation_matrix(nodes, np.array([key.point])) @ Dk[key.order])[0]
        value = probe(np.array([key.point]), key.order)[key.order][0, j] + at[key] @ total[:, j]
        env[key] = np.array([value])
    one = np.zeros(1)
    row = np.zeros(n * m)
    for key in keys:
        j = problem.unknowns.index(key.unknown)
        row[j * n : (j + 1) * n] += float(_sensitivity(program, env, key, one)[0]) * at[key]
    return row, float(evaluate(program, env, one)[0])
