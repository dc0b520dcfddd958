"""Hard constraints built from the conditions, for any mix of linear conditions.

The trial solution of unknown u is

    y_u(x) = S_u N_u(x) + sum_{j in B_u} c_j phi_j(x),    phi_j(x) = t(x)^{d_j},

with t the input scaled to [-1, 1] and S_u the output scale. Every linear condition
``sum alpha * y_u^(k)(p) + beta = 0`` is then a linear equation in the coefficients c, which
depend linearly on the network's values n = (S_u N_u^(k)(p)) at the condition points:

    M c = -(beta + G n)   =>   c = c0 + K n,  c0 = -M^-1 beta,  K = -M^-1 G.

So the conditions hold exactly for every weight vector (a "theory of functional connections"
construction). It covers initial values of any order, systems, Dirichlet, Neumann, Robin,
multi-point and periodic conditions alike. The degrees d_j are chosen so that M is well
conditioned; conditions that are not linear, or for which no such choice exists, become
penalty terms in the loss.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from odeserve.problem import Problem

#: M must be at least this well conditioned for its conditions to be built in.
_MAX_CONDITION_NUMBER = 1e8
#: Degrees tried per unknown: subsets of 0..k+_EXTRA_DEGREES-1 for k basis functions.
_EXTRA_DEGREES = 3


@dataclass(frozen=True)
class ConstraintPlan:
    """What the trial function needs to impose the hard conditions (plain arrays)."""

    hard: tuple[int, ...]  # condition indices built in
    penalty: tuple[int, ...]  # condition indices left to the loss
    degrees: np.ndarray  # (nb,) basis degrees
    owner: np.ndarray  # (nb,) unknown index of each basis function
    points: np.ndarray  # (np,) distinct condition points
    key_unknown: np.ndarray  # (nk,)
    key_order: np.ndarray  # (nk,)
    key_point: np.ndarray  # (nk,) index into points
    c0: np.ndarray  # (nb,)
    K: np.ndarray  # (nb, nk)
    notes: list[str] = field(default_factory=list)

    @property
    def max_key_order(self) -> int:
        return int(self.key_order.max()) if self.key_order.size else 0


def _phi(degree: int, order: int, t: float, dt: float) -> float:
    """The order-th x-derivative of t^degree at t."""
    if order > degree:
        return 0.0
    coef = 1.0
    for i in range(order):
        coef *= degree - i
    return coef * t ** (degree - order) * dt**order


def plan_constraints(problem: Problem, scales: np.ndarray) -> ConstraintPlan:
    """Choose which conditions to build in and how (see the module docstring)."""
    unknown_index = {u: i for i, u in enumerate(problem.unknowns)}
    a, b = problem.domain
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    notes: list[str] = []
    conds = problem.conditions
    all_linear = all(c.linear is not None for c in conds)
    if not problem.options.hard_constraints or not conds:
        return _empty(len(conds), notes)
    if all_linear:
        hard = list(range(len(conds)))
        counts = {u: problem.orders[u] for u in problem.unknowns}
    else:
        # Keep the linear conditions on a single unknown; the rest become penalties.
        hard = [i for i, c in enumerate(conds) if c.linear is not None and len({k[0] for k in c.linear.coeffs}) == 1]
        counts = {u: 0 for u in problem.unknowns}
        for i in hard:
            counts[next(iter(conds[i].linear.coeffs))[0]] += 1  # type: ignore[union-attr]
        notes.append("conditions that are not linear are imposed as penalties")
    if not hard:
        return _empty(len(conds), notes)

    keys = sorted({k for i in hard for k in conds[i].linear.coeffs})  # type: ignore[union-attr]
    points = sorted({k[2] for k in keys})
    G = np.zeros((len(hard), len(keys)))
    beta = np.zeros(len(hard))
    for r, i in enumerate(hard):
        form = conds[i].linear
        assert form is not None
        beta[r] = form.constant
        for k, v in form.coeffs.items():
            G[r, keys.index(k)] = v

    def matrix(choice: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, list[int], list[int]]:
        degrees: list[int] = []
        owner: list[int] = []
        for u in problem.unknowns:
            degrees += list(choice[u])
            owner += [unknown_index[u]] * len(choice[u])
        M = np.zeros((len(hard), len(degrees)))
        for col, (d, o) in enumerate(zip(degrees, owner)):
            for c_idx, k in enumerate(keys):
                if unknown_index[k[0]] == o:
                    t = (k[2] - mid) / half
                    M[:, col] += G[:, c_idx] * _phi(d, k[1], t, 1.0 / half)
        return M, degrees, owner

    options = {
        u: sorted(itertools.combinations(range(counts[u] + _EXTRA_DEGREES), counts[u]), key=sum)
        for u in problem.unknowns
    }
    for n_tried, combo in enumerate(itertools.product(*(options[u] for u in problem.unknowns))):
        if n_tried > 500:
            break
        choice = dict(zip(problem.unknowns, combo))
        M, degrees, owner = matrix(choice)
        if M.shape[0] == M.shape[1] and np.linalg.cond(M) < _MAX_CONDITION_NUMBER:
            Minv = np.linalg.inv(M)
            # n holds S_u N_u^(k)(p); G acts on y values, so it sees the scaled network directly.
            return ConstraintPlan(
                hard=tuple(hard),
                penalty=tuple(i for i in range(len(conds)) if i not in hard),
                degrees=np.array(degrees, dtype=np.int64),
                owner=np.array(owner, dtype=np.int64),
                points=np.array(points, dtype=np.float64),
                key_unknown=np.array([unknown_index[k[0]] for k in keys], dtype=np.int64),
                key_order=np.array([k[1] for k in keys], dtype=np.int64),
                key_point=np.array([points.index(k[2]) for k in keys], dtype=np.int64),
                c0=-Minv @ beta,
                K=-Minv @ G,
                notes=notes,
            )
    notes.append("the conditions could not be built into the network (singular system); imposed as penalties")
    return _empty(len(conds), notes)


def _empty(n_conditions: int, notes: list[str]) -> ConstraintPlan:
    z = np.zeros(0, dtype=np.int64)
    return ConstraintPlan(
        hard=(),
        penalty=tuple(range(n_conditions)),
        degrees=z,
        owner=z,
        points=np.zeros(0),
        key_unknown=z,
        key_order=z,
        key_point=z,
        c0=np.zeros(0),
        K=np.zeros((0, 0)),
        notes=notes,
    )
