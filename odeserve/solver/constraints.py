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
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from odeserve.expr.keys import PointKey
from odeserve.problem import Problem

#: M must be at least this well conditioned for its conditions to be built in.
_MAX_CONDITION_NUMBER = 1e8
_PENALTY_NOTE = (
    "conditions that are not linear in the unknowns' values, or that involve a ranged or estimated "
    "parameter, are imposed as penalties"
)
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


def plan_constraints(problem: Problem) -> ConstraintPlan:
    """Choose which conditions to build in and how (see the module docstring)."""
    conds = problem.conditions
    if not problem.options.hard_constraints or not conds:
        return _empty(len(conds), [])
    hard, counts, notes = _hard_conditions(problem)
    if not hard:
        return _empty(len(conds), notes)
    system = _ConditionSystem.build(problem, hard)
    for choice in _degree_choices(problem.unknowns, counts):
        plan = system.plan(choice, len(conds), notes)
        if plan is not None:
            return plan
    notes.append("the conditions could not be built into the network (singular system); imposed as penalties")
    return _empty(len(conds), notes)


def _hard_conditions(problem: Problem) -> tuple[list[int], dict[str, int], list[str]]:
    """The conditions to build in, how many basis functions each unknown needs, and notes."""
    conds = problem.conditions
    if all(c.linear is not None for c in conds):
        return list(range(len(conds))), dict(problem.orders), []
    # Keep the linear conditions on a single unknown; the rest become penalties.
    hard: list[int] = []
    counts = dict.fromkeys(problem.unknowns, 0)
    for i, c in enumerate(conds):
        if c.linear is not None and len({k.unknown for k in c.linear.coeffs}) == 1:
            hard.append(i)
            counts[next(iter(c.linear.coeffs)).unknown] += 1
    return hard, counts, [_PENALTY_NOTE]


def _degree_choices(unknowns: tuple[str, ...], counts: dict[str, int]) -> Iterator[dict[str, tuple[int, ...]]]:
    """Basis degrees to try per unknown, lowest total degree first, at most 500 combinations."""
    options = [sorted(itertools.combinations(range(counts[u] + _EXTRA_DEGREES), counts[u]), key=sum) for u in unknowns]
    for combo in itertools.islice(itertools.product(*options), 501):
        yield dict(zip(unknowns, combo))


@dataclass(frozen=True)
class _ConditionSystem:
    """The hard conditions as ``G n + beta = 0`` over the point values n (keys, in order)."""

    hard: list[int]
    unknown_index: dict[str, int]
    keys: list[PointKey]
    points: list[float]
    G: np.ndarray
    beta: np.ndarray
    mid: float
    half: float

    @classmethod
    def build(cls, problem: Problem, hard: list[int]) -> _ConditionSystem:
        forms = [problem.conditions[i].linear for i in hard]
        keys = sorted({k for form in forms if form is not None for k in form.coeffs})
        G = np.zeros((len(hard), len(keys)))
        beta = np.zeros(len(hard))
        for r, form in enumerate(forms):
            assert form is not None, "hard conditions are linear"
            beta[r] = form.constant
            for k, v in form.coeffs.items():
                G[r, keys.index(k)] = v
        a, b = problem.domain
        return cls(
            hard=hard,
            unknown_index={u: i for i, u in enumerate(problem.unknowns)},
            keys=keys,
            points=sorted({k.point for k in keys}),
            G=G,
            beta=beta,
            mid=0.5 * (a + b),
            half=0.5 * (b - a),
        )

    def basis_matrix(self, choice: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, list[int], list[int]]:
        """M[r, j]: condition r applied to basis function j (degree d_j of its owner unknown)."""
        degrees: list[int] = []
        owner: list[int] = []
        for u, chosen in choice.items():
            degrees += list(chosen)
            owner += [self.unknown_index[u]] * len(chosen)
        M = np.zeros((len(self.hard), len(degrees)))
        for col, (d, o) in enumerate(zip(degrees, owner)):
            for c_idx, k in enumerate(self.keys):
                if self.unknown_index[k.unknown] == o:
                    t = (k.point - self.mid) / self.half
                    M[:, col] += self.G[:, c_idx] * _phi(d, k.order, t, 1.0 / self.half)
        return M, degrees, owner

    def plan(self, choice: dict[str, tuple[int, ...]], n_conditions: int, notes: list[str]) -> ConstraintPlan | None:
        """The plan for one choice of degrees, or None when M is singular or ill conditioned."""
        M, degrees, owner = self.basis_matrix(choice)
        if M.shape[0] != M.shape[1] or not np.linalg.cond(M) < _MAX_CONDITION_NUMBER:
            return None
        Minv = np.linalg.inv(M)
        # n holds S_u N_u^(k)(p); G acts on y values, so it sees the scaled network directly.
        return ConstraintPlan(
            hard=tuple(self.hard),
            penalty=tuple(i for i in range(n_conditions) if i not in self.hard),
            degrees=np.array(degrees, dtype=np.int64),
            owner=np.array(owner, dtype=np.int64),
            points=np.array(self.points, dtype=np.float64),
            key_unknown=np.array([self.unknown_index[k.unknown] for k in self.keys], dtype=np.int64),
            key_order=np.array([k.order for k in self.keys], dtype=np.int64),
            key_point=np.array([self.points.index(k.point) for k in self.keys], dtype=np.int64),
            c0=-Minv @ self.beta,
            K=-Minv @ self.G,
            notes=notes,
        )


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
