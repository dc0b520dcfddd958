"""An upper bound on the error where the linearised correction cannot be trusted.

With L the collocation equations linearised at the trained solution y and r its residual, the
first-order error is e = L⁺ r, so ``||e|| <= ||r|| / sigma_min(L)`` and, at every node,
``|e_i| <= ||r|| * ||row_i(L⁺)||``. Rows and columns carry Clenshaw-Curtis weights, so that the
vector norms are L2 norms over the domain and the bound is one on the relative L2 error.

Where the equations pin the solution down only weakly, sigma_min is tiny and the linearised
correction's component along its singular vector is noise: a viscous front whose position
depends on exponentially small terms has a near-kernel (the front's displacement), so curves
that differ by 1e-2 all satisfy the equations to within the residual's noise, and neither a
classical solver nor Newton's method can tell them apart. The correction then fails its
resolution or confirmation check; this bound still says how large the error may be, and errs
on the large side (it is the worst case over every residual of the network's size, not the
error itself). It is taken on the finest grid that fits (:func:`residual.ladder`), and
only where that grid resolves both the solution and the worst-determined direction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from odeserve.estimate.residual import RESOLVED, Unreliable, derivative_matrices, ladder, linear_system, tail
from odeserve.estimate.system import NotApplicable
from odeserve.problem import Problem

Probe = Callable[[np.ndarray, int], list[np.ndarray]]

#: The solution counts as resolved on the grid when its Chebyshev tail is this small.
SOLUTION_RESOLVED = 1e-6


@dataclass(frozen=True)
class ResidualBound:
    rel_l2: dict[str, float]  # per unknown: the bound on ||e_j|| / ||y_j|| (L2 over the domain)
    max_abs: dict[str, float]  # per unknown: the bound on max |e_j| over the nodes
    nodes: int
    condition: float  # sigma_max / sigma_min of the weighted linearised problem


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
    """The first-order bound at the trained solution; raises :class:`NotApplicable` where the
    problem is singular, or :class:`Unreliable` where the grid does not resolve it."""
    m = len(problem.unknowns)
    n = ladder(m)[-1]
    nodes, Dk = derivative_matrices(problem, n)
    derivs = probe(nodes, problem.max_order)
    y = derivs[0]
    if tail(y) > SOLUTION_RESOLVED:
        raise Unreliable(f"the solution is not resolved by {n + 1} Chebyshev nodes")
    A, r = linear_system(problem, probe, nodes, Dk, derivs, np.zeros_like(y))
    a, b = problem.domain
    sw = np.sqrt(clenshaw_curtis(n) * (b - a) / 2.0)
    conditions = A.shape[0] - len(problem.equations) * (n + 1)
    rows = np.concatenate([np.tile(sw, len(problem.equations)), np.ones(conditions)])
    cols = np.tile(sw, m)
    U, S, Vt = np.linalg.svd(A * rows[:, None] / cols[None, :], full_matrices=False)
    if not (S[-1] > 0 and np.all(np.isfinite(S))):
        raise NotApplicable("the linearised problem is singular")
    worst = Vt[-1].reshape(m, n + 1).T
    if tail(worst) > RESOLVED:
        raise Unreliable(f"the worst-determined direction is not resolved by {n + 1} Chebyshev nodes")
    size = float(np.linalg.norm(r * rows))
    G = Vt.T / S[None, :]  # weighted L⁺ = V S⁻¹ Uᵀ, less the orthogonal Uᵀ
    pointwise = size * np.linalg.norm(G, axis=1) / cols
    rel, most = {}, {}
    for j, u in enumerate(problem.unknowns):
        block = slice(j * (n + 1), (j + 1) * (n + 1))
        norm_y = float(np.linalg.norm(sw * y[:, j]))
        bound = size * float(np.linalg.norm(G[block], 2))
        rel[u] = bound / norm_y if norm_y > 0 else bound
        most[u] = float(np.max(pointwise[block]))
    return ResidualBound(rel, most, n + 1, float(S[0] / S[-1]))
