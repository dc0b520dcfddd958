"""Where nothing certifies the error: show, where it is so, that the residual cannot bound it.

Let w be the direction that the linearised equations see least (the smallest singular vector
of the constrained, Clenshaw-Curtis-weighted collocation system of :mod:`.bound`, on the
finest grid that fits), and ``s = ||L w|| / ||w||`` measured again on two finer grids. A
correction ``t w`` keeps the conditions and changes the linearised residual by ``t s ||w||``;
with ``t s ||w|| = ||r||`` (the network's residual) it is invisible to the equations at first
order, and its size relative to the network is

    X = ||r|| / (s ||y||).

Where X >= :data:`UNDETERMINED` the equations cannot tell the network from curves that differ
from it by as much as the network itself: no estimate can be given, and X says why. It is not
an estimate (the true solution may be far smaller than a poor network, and the error anywhere
from tiny to larger than the solution). Two things make X large: a residual far above what the
network needs (a poor fit), or a problem whose linearised operator is nearly singular beyond
what any grid resolves (a viscous front whose position only exponentially small terms fix).

The claim needs w to be a real function and s a real number: w must be resolved on its grid
(Chebyshev tail) and s must agree within :data:`AGREE` on two finer grids, else nothing is
claimed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from odeserve.estimate.bound import AGREE, SOLUTION_RESOLVED, Grid, Weighted, constrained
from odeserve.estimate.residual import (
    MAX_COLUMNS,
    RESOLVED,
    Probe,
    Unreliable,
    interpolation_matrix,
    tail,
)
from odeserve.problem import Problem

#: X at or above this: a correction as large as the solution is invisible to the residual.
UNDETERMINED = 1.0
#: The grid the near-null direction is computed on (N, for N + 1 nodes), the largest that fits
#: MAX_COLUMNS (the SVD's columns), and the two finer grids that measure s again.
DIRECTION_GRIDS = (768, 512, 256, 128)
CHECK_FACTORS = (4 / 3, 2)


@dataclass(frozen=True)
class Undetermined:
    ratio: float  # X: ||r|| / (s ||y||)
    nodes: int  # the direction's grid
    sigma_min: float  # on that grid
    checks: tuple[tuple[int, float], ...]  # (nodes, s) on the finer grids


def undetermined(problem: Problem, probe: Probe) -> Undetermined:
    """X and the numbers behind it; raises :class:`Unreliable` where X < UNDETERMINED or the
    direction or its measure is not resolved."""
    u = least_determined(problem, probe)
    if not u.ratio >= UNDETERMINED:
        raise Unreliable(f"the residual rules out errors as large as the solution (X = {u.ratio:.2g})")
    return u


def least_determined(problem: Problem, probe: Probe) -> Undetermined:
    """X, whatever its size; raises :class:`Unreliable` where the direction or its measure is
    not resolved."""
    m = len(problem.unknowns)
    n = next((n for n in DIRECTION_GRIDS if m * (n + 1) <= MAX_COLUMNS), DIRECTION_GRIDS[-1])
    grid = Grid.of(problem, probe, n)
    w = Weighted.on(problem, probe, grid)
    if tail(w.y) > SOLUTION_RESOLVED:
        raise Unreliable(f"the solution is not resolved by {n + 1} Chebyshev nodes")
    _, N = constrained(w.C, w.c)
    _, S, Vt = np.linalg.svd(w.L @ N, full_matrices=False)
    direction = ((N @ Vt[-1]) / w.cols).reshape(m, n + 1).T  # nodal values, unknown by unknown
    if tail(direction) > RESOLVED:
        raise Unreliable(f"the least-determined direction is not resolved by {n + 1} Chebyshev nodes")
    measured = [_measure(problem, probe, grid.nodes, direction, round(n * f)) for f in CHECK_FACTORS]
    s = [sigma for sigma, _ in measured]
    if not min(s) > 0 or max(s) > AGREE * min(s):
        raise Unreliable(f"the least-determined direction's residual is not confirmed ({s[0]:.2e} and {s[1]:.2e})")
    fine = measured[-1][1]
    size = float(np.linalg.norm(fine.sw[:, None] * fine.y))
    ratio = float(np.linalg.norm(fine.r)) / (max(s) * size) if size > 0 else float("inf")
    checks = tuple((system.nodes.shape[0], sigma) for sigma, system in measured)
    return Undetermined(ratio, n + 1, float(S[-1]), checks)


def _measure(
    problem: Problem, probe: Probe, nodes: np.ndarray, direction: np.ndarray, n: int
) -> tuple[float, Weighted]:
    """(||L w|| / ||w||, the weighted system) on n + 1 Chebyshev nodes, w interpolated there."""
    w = Weighted.on(problem, probe, Grid.of(problem, probe, n))
    v = (interpolation_matrix(nodes, w.nodes) @ direction).T.reshape(-1) * w.cols
    return float(np.linalg.norm(w.L @ v) / np.linalg.norm(v)), w
