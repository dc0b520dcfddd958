"""A first-order upper bound on the error, where the linearised correction cannot be trusted.

Let L be the equations linearised at the trained solution y and collocated on Chebyshev nodes,
C the linearised conditions, and r, c their residuals at y. To first order the error e solves
``L e = -r`` subject to ``C e = -c``. Writing ``e = e_c + N z`` with e_c the smallest correction
that satisfies the conditions and N an orthonormal basis of the corrections that keep them
(the conditions are constraints, not rows to weigh against the equations):

    ||e|| <= ||e_c|| + ||r + L e_c|| / sigma_min(L N)

and, at node i, ``|e_i| <= |e_c,i| + ||r + L e_c|| * ||row_i(N (L N)⁺)||``. Clenshaw-Curtis
weights on rows and columns make the vector norms L2 norms over the domain, so the first line
bounds the relative L2 error.

The bound is only as good as sigma_min, so it is given only where sigma_min has converged: it
is computed on the two finest grids that fit (:func:`residual.ladder`), and the two must agree
within :data:`AGREE`, with a condition number below :data:`MAX_CONDITION` (above it sigma_min
is round-off), the solution and the first-order error resolved, and the linearisation must
hold: the bound below :data:`FIRST_ORDER`, and sigma_min at the network plus its first-order
correction within :data:`AGREE` of sigma_min at the network (near a fold, where a solution
branch turns, it is not). The larger of the two grids' bounds is reported, scaled up by the
ratio of the two sigma_min when the corrected one is smaller. An ill-conditioned
problem whose sigma_min keeps falling as the grid is refined (a viscous front whose position the
equations pin down only by exponentially small terms) gets no bound: no grid can certify one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from odeserve.estimate.residual import (
    NEGLIGIBLE,
    RESOLVED,
    Probe,
    Unreliable,
    derivative_matrices,
    ladder,
    linear_system,
    tail,
)
from odeserve.estimate.system import NotApplicable
from odeserve.problem import Problem

#: The solution counts as resolved on a grid when its Chebyshev tail is this small.
SOLUTION_RESOLVED = 1e-6
#: sigma_min on the two grids agrees within this factor (it has converged with the grid).
AGREE = 2.0
#: Above this sigma_max / sigma_min, sigma_min is at round-off level.
MAX_CONDITION = 1e14
#: A first-order bound above this relative size is not trusted (nor is the linearisation).
FIRST_ORDER = 0.1
#: The smallest relative error that an estimate without a classical reference claims (this
#: bound, and the linearised correction's estimate): the network's values and derivatives and
#: the estimators' own linear algebra carry rounding errors near 1e-13 of the solution's size in
#: float64, so a smaller figure would be rounding, not knowledge. Linear problems' networks
#: reach 1e-14 (odeserve.solver.projection); a classical reference has its own floor.
RESOLUTION = 1e-12


@dataclass(frozen=True)
class ResidualBound:
    rel_l2: dict[str, float]  # per unknown: the bound on ||e_j|| / ||y_j|| (L2 over the domain)
    max_abs: dict[str, float]  # per unknown: the bound on max |e_j| over the Chebyshev nodes
    nodes: tuple[int, int]  # the two grids' node counts
    sigma_min: tuple[float, float]
    condition: float  # the larger of the two grids' sigma_max / sigma_min


def clenshaw_curtis(n: int) -> np.ndarray:
    """Quadrature weights on [-1, 1] for the nodes cos(pi k / n), k = 0..n (Trefethen's clencurt)."""
    theta = np.pi * np.arange(n + 1) / n
    inner = theta[1:-1]
    v = np.ones(n - 1)
    w = np.zeros(n + 1)
    if n % 2 == 0:
        w[0] = w[n] = 1.0 / (n * n - 1)
        for k in range(1, n // 2):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
        v -= np.cos(n * inner) / (n * n - 1)
    else:
        w[0] = w[n] = 1.0 / (n * n)
        for k in range(1, (n - 1) // 2 + 1):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
    w[1:-1] = 2.0 * v / n
    return w


def residual_bound(problem: Problem, probe: Probe) -> ResidualBound:
    """The first-order bound at the trained solution; raises :class:`Unreliable` (with the
    numbers) where no grid pair certifies it."""
    sizes = ladder(len(problem.unknowns))
    if len(sizes) < 2:
        raise Unreliable("only one collocation grid fits this many unknowns: the bound cannot be confirmed")
    grids = [Grid.of(problem, probe, n) for n in sizes[-2:]]
    coarse, fine = (_GridBound.on(problem, probe, g) for g in grids)
    sigmas = (coarse.sigma_min, fine.sigma_min)
    condition = max(coarse.condition, fine.condition)
    if condition > MAX_CONDITION or max(sigmas) > AGREE * min(sigmas):
        raise Unreliable(
            f"ill-conditioned: the linearised problem's smallest singular value is {sigmas[0]:.2e} on "
            f"{coarse.nodes} Chebyshev nodes and {sigmas[1]:.2e} on {fine.nodes} (condition number "
            f"{condition:.1e}), so no grid pins the error down"
        )
    rel = {u: max(coarse.rel_l2[u], fine.rel_l2[u]) for u in problem.unknowns}
    most = {u: max(coarse.max_abs[u], fine.max_abs[u]) for u in problem.unknowns}
    if tail(fine.correction) > RESOLVED and max(rel.values()) > NEGLIGIBLE:  # round-off has no tail to speak of
        raise Unreliable(f"the first-order error is not resolved by {fine.nodes} Chebyshev nodes")
    corrected = _GridBound.on(problem, probe, grids[-1], fine.correction).sigma_min
    if max(corrected, fine.sigma_min) > AGREE * min(corrected, fine.sigma_min):
        raise Unreliable(
            f"the linearisation does not hold: the smallest singular value is {fine.sigma_min:.2e} at the "
            f"network and {corrected:.2e} at the network plus its first-order correction"
        )
    worse = max(1.0, fine.sigma_min / corrected)  # the smaller sigma_min of the two, for the bound
    rel = {u: v * worse for u, v in rel.items()}
    most = {u: v * worse for u, v in most.items()}
    if max(rel.values()) > FIRST_ORDER:
        raise Unreliable(f"the first-order bound ({max(rel.values()):.2g}) is too large for the linearisation to hold")
    size = np.max(np.abs(grids[-1].derivs[0]), axis=0)
    rel = {u: max(v, RESOLUTION) for u, v in rel.items()}
    most = {u: max(v, RESOLUTION * float(size[j])) for j, (u, v) in enumerate(most.items())}
    return ResidualBound(rel, most, (coarse.nodes, fine.nodes), sigmas, condition)


@dataclass(frozen=True)
class Grid:
    """Chebyshev nodes, their derivative matrices, and the network's derivatives there."""

    nodes: np.ndarray
    Dk: list[np.ndarray]
    derivs: list[np.ndarray]

    @staticmethod
    def of(problem: Problem, probe: Probe, n: int) -> Grid:
        nodes, Dk = derivative_matrices(problem, n)
        return Grid(nodes, Dk, probe(nodes, problem.max_order))


@dataclass(frozen=True)
class _GridBound:
    nodes: int
    rel_l2: dict[str, float]
    max_abs: dict[str, float]
    sigma_min: float
    condition: float
    correction: np.ndarray  # (n + 1, m): the first-order error itself (least squares)

    @staticmethod
    def on(problem: Problem, probe: Probe, grid: Grid, total: np.ndarray | None = None) -> _GridBound:
        """The bound on the grid's nodes, linearised at the network plus ``total`` (nodal
        values, (nodes, m)) when given."""
        m, k = len(problem.unknowns), grid.nodes.shape[0]
        w = Weighted.on(problem, probe, grid, total)
        y, sw, cols, L = w.y, w.sw, w.cols, w.L
        if tail(y) > SOLUTION_RESOLVED:
            raise Unreliable(f"the solution is not resolved by {k} Chebyshev nodes")
        ec, N = constrained(w.C, w.c)
        U, S, Vt = np.linalg.svd(L @ N, full_matrices=False)
        if not (S[-1] > 0 and np.all(np.isfinite(S))):
            raise NotApplicable("the linearised problem is singular")
        G = N @ (Vt.T / S[None, :])  # e = ec + G Uᵀ (r + L ec), weighted
        rest = w.r - L @ ec
        size = float(np.linalg.norm(rest))
        correction = ((ec + G @ (U.T @ rest)) / cols).reshape(m, k).T
        pointwise = (np.abs(ec) + size * np.linalg.norm(G, axis=1)) / cols
        rel, most = {}, {}
        for j, u in enumerate(problem.unknowns):
            block = slice(j * k, (j + 1) * k)
            norm_y = float(np.linalg.norm(sw * y[:, j]))
            bound = float(np.linalg.norm(ec[block])) + size * float(np.linalg.norm(G[block], 2))
            rel[u] = bound / norm_y if norm_y > 0 else bound
            most[u] = float(np.max(pointwise[block]))
        return _GridBound(k, rel, most, float(S[-1]), float(S[0] / S[-1]), correction)


@dataclass(frozen=True)
class Weighted:
    """The linearised collocation system on a grid, weighted by Clenshaw-Curtis so that vector
    norms are L2 norms over the domain: ``L`` (equations x corrections), the condition rows
    ``C`` (over weighted corrections) with right-hand side ``c``, and ``r`` minus the equations'
    weighted residuals. A nodal correction e (unknown by unknown) is ``cols * e`` in these
    coordinates."""

    nodes: np.ndarray
    y: np.ndarray  # (nodes, m): the solution linearised at
    sw: np.ndarray  # sqrt of the quadrature weights at the nodes
    cols: np.ndarray  # sw per unknown: the column scaling
    L: np.ndarray
    C: np.ndarray
    c: np.ndarray
    r: np.ndarray

    @staticmethod
    def on(problem: Problem, probe: Probe, grid: Grid, total: np.ndarray | None = None) -> Weighted:
        """Linearised at the network plus ``total`` (nodal values, (nodes, m)) when given."""
        derivs = grid.derivs
        if total is None:
            total = np.zeros_like(derivs[0])
        else:
            derivs = [d + grid.Dk[i] @ total for i, d in enumerate(derivs)]
        A, rhs = linear_system(problem, probe, grid.nodes, grid.Dk, derivs, total)
        a, b = problem.domain
        sw = np.sqrt(clenshaw_curtis(grid.nodes.shape[0] - 1) * (b - a) / 2.0)
        cols = np.tile(sw, len(problem.unknowns))
        rows = np.tile(sw, len(problem.equations))
        n_eq = rows.shape[0]
        L = A[:n_eq] * rows[:, None] / cols[None, :]
        return Weighted(grid.nodes, derivs[0], sw, cols, L, A[n_eq:] / cols[None, :], rhs[n_eq:], rhs[:n_eq] * rows)


def constrained(C: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(e_c, N): the smallest e with C e = c, and an orthonormal basis of C's null space."""
    if C.shape[0] == 0:
        return np.zeros(C.shape[1]), np.eye(C.shape[1])
    U, sv, Vt = np.linalg.svd(C, full_matrices=True)
    rank = int(np.count_nonzero(sv > 1e-12 * sv[0]))
    ec = Vt[:rank].T @ ((U[:, :rank].T @ c) / sv[:rank])
    return ec, Vt[rank:].T
