"""Variable projection: the Levenberg-Marquardt step with the network's output layer eliminated.

When the equations and conditions are affine in the unknowns (``Problem.is_linear``; the steps
use this unless ``options.variable_projection`` is off: ``Problem.projects``), the
residual is affine in the output layer's weights w: ``r(h, w) = A(h) w - b(h)``, with h the
other weights (the hidden layers, and an inverse problem's parameters). For fixed h the best w
is a linear least-squares solution, so the problem is *separable* (Golub and Pereyra, 1973):
minimise over h alone, with w always optimal for it.

Each step here is the Levenberg-Marquardt step of the linear model ``r + H s_h + A s_w`` with
the damping on the hidden block only and the output block solved exactly (Kaufman's variable
projection step, 1975):

    s_h = argmin ||P (r + H s_h)||^2 + mu ||s_h||^2,   s_w = -A^+ (r + H s_h),

with ``P = I - A A^+`` the projection off A's columns. That is a plain damped step for the
residual ``P r`` and the Jacobian ``P H`` (:func:`odeserve.solver.damped.damped_solver`), then a
back-substitution. On the public problems with default options the hidden layers stopped
improving after 3 to 92 steps instead of running the whole budget of 1,900 (30 to 170 since the
output layer's ridge, :mod:`odeserve.solver.ridge`), and the answer was 330 to 134,000 times
more accurate (BENCHMARKS.md, "Default solves"): plain Levenberg-Marquardt damps
the output layer too, which leaves it short of its optimum in the directions that the Gram
matrix barely sees, and that is where its slow tail of steps was spent.

:class:`Projection` works on one Jacobian (R, P) or a batch of them (B, R, P): the sweeps'
batched training (:mod:`odeserve.solver.batch_train`) takes the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from odeserve.solver.damped import DampedSolver, damped_solver


@dataclass
class Projection:
    """The output block A = J[..., columns] of Jacobians J (..., R, P) (finite): the Jacobians,
    an orthonormal basis ``Q`` of A's range and ``pinv`` with A^+ = pinv @ Q^T, both to A's
    numerical rank (dead or duplicate neurons, a zero output scale), as zero columns beyond it.
    The hidden block H is J with A's columns zeroed; it is never copied out (H s = J s for a step
    s that is zero in the output block, and P H is P J with those columns zeroed)."""

    columns: slice
    J: Tensor
    Q: Tensor
    pinv: Tensor

    @classmethod
    def of(cls, J: Tensor, columns: slice) -> Projection:
        A = J[..., columns]
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        tol = S[..., :1] * max(A.shape[-2:]) * torch.finfo(A.dtype).eps
        keep = tol < S
        inverse = torch.where(keep, 1.0 / S, torch.zeros_like(S))
        return cls(columns, J, U * keep.unsqueeze(-2), Vh.mT * inverse.unsqueeze(-2))

    def off(self, v: Tensor) -> Tensor:
        """P v for v (..., R, K): v with its part in A's range taken off."""
        return v - self.Q @ (self.Q.mT @ v)

    def correction(self, v: Tensor) -> Tensor:
        """-A^+ v for v (..., R): the output block's least-squares change that cancels v."""
        return -(self.pinv @ (self.Q.mT @ v.unsqueeze(-1))).squeeze(-1)

    def hidden(self) -> Tensor:
        """P H: the hidden block projected off A's range (one new J-sized tensor), its output
        columns zero (P A is zero but for rounding)."""
        # J - Q (Q^T J) in one fused product: no J-sized temporary besides the result.
        qtj = self.Q.mT @ self.J
        if self.J.dim() == 2:
            out = torch.addmm(self.J, self.Q, qtj, alpha=-1.0)
        else:
            out = torch.baddbmm(self.J, self.Q, qtj, alpha=-1.0)
        out[..., self.columns] = 0.0
        return out

    def hidden_block(self) -> Tensor:
        """P H without the output columns (..., R, P - W): one new tensor of that size, the
        hidden columns gathered and projected in place (no J-sized temporary)."""
        H = _without(self.J, self.columns)
        return (
            H.addmm_(self.Q, self.Q.mT @ H, alpha=-1.0)
            if H.dim() == 2
            else H.baddbmm_(self.Q, self.Q.mT @ H, alpha=-1.0)
        )

    def complete(self, r: Tensor, s: Tensor) -> Tensor:
        """The step s (..., P) with its output block, zero so far, set to -A^+ (r + H s)."""
        s[..., self.columns] = self.correction(r + (self.J @ s.unsqueeze(-1)).squeeze(-1))
        return s

    def keep(self, rows: Tensor) -> Projection:
        """A batch's members at ``rows``."""
        return Projection(self.columns, self.J[rows], self.Q[rows], self.pinv[rows])

    def replace(self, rows: Tensor, new: Projection) -> None:
        """The members at ``rows`` (a mask) replaced by ``new``'s (its J is the batch's own:
        the caller replaces that)."""
        self.Q[rows], self.pinv[rows] = new.Q, new.pinv


@dataclass(frozen=True)
class OutputBlocks:
    """The output layers of ``count`` members side by side in ``columns``, the residual's rows in
    ``count`` equal blocks (equal: the caller checks), each depending on its own member's layer only: the output block A is
    block diagonal (the anchors of a shared-basis sweep, :mod:`odeserve.solver.shared_basis`)."""

    columns: slice
    count: int


#: Where a residual is affine: its output layer, or several members' output layers in blocks.
LinearColumns = slice | OutputBlocks


def output_columns(columns: LinearColumns) -> slice:
    """All the output layers' columns together."""
    return columns.columns if isinstance(columns, OutputBlocks) else columns


@dataclass
class BlockProjection:
    """:class:`Projection` for a block-diagonal output block (:class:`OutputBlocks`) of one
    Jacobian J (R, P): one SVD per block, and the projections block by block (a dense A would
    cost the SVD count^2 times over and P H count times over)."""

    columns: slice
    J: Tensor
    Q: Tensor  # (count, R / count, width)
    pinv: Tensor  # (count, width, width)

    @classmethod
    def of(cls, J: Tensor, blocks: OutputBlocks) -> BlockProjection:
        n = blocks.count
        width = (blocks.columns.stop - blocks.columns.start) // n
        rows = J.shape[0] // n
        if rows * n != J.shape[0] or width * n != blocks.columns.stop - blocks.columns.start:
            raise ValueError(f"{n} output blocks need equal rows and columns, got J of shape {tuple(J.shape)}")
        A = torch.stack(
            [
                J[b * rows : (b + 1) * rows, blocks.columns.start + b * width : blocks.columns.start + (b + 1) * width]
                for b in range(n)
            ]
        )
        whole = Projection.of(A, slice(0, width))
        return cls(blocks.columns, J, whole.Q, whole.pinv)

    def _blocks(self, v: Tensor) -> Tensor:
        return v.reshape(self.Q.shape[0], self.Q.shape[1], -1)

    def off(self, v: Tensor) -> Tensor:
        vb = self._blocks(v)
        return (vb - self.Q @ (self.Q.mT @ vb)).reshape(v.shape)

    def correction(self, v: Tensor) -> Tensor:
        return -(self.pinv @ (self.Q.mT @ self._blocks(v))).reshape(-1)

    def hidden(self) -> Tensor:
        Jb = self._blocks(self.J)
        out = torch.baddbmm(Jb, self.Q, self.Q.mT @ Jb, alpha=-1.0).reshape(self.J.shape)
        out[:, self.columns] = 0.0
        return out

    def hidden_block(self) -> Tensor:
        H = _without(self.J, self.columns)
        Hb = H.reshape(self.Q.shape[0], self.Q.shape[1], -1)
        Hb.baddbmm_(self.Q, self.Q.mT @ Hb, alpha=-1.0)
        return H

    def complete(self, r: Tensor, s: Tensor) -> Tensor:
        s[self.columns] = self.correction(r + self.J @ s)
        return s


def _without(J: Tensor, columns: slice) -> Tensor:
    """J's columns outside ``columns``, as a new tensor."""
    return torch.cat([J[..., : columns.start], J[..., columns.stop :]], -1)


def projection_of(J: Tensor, columns: LinearColumns) -> Projection | BlockProjection:
    """The projection off the output block of J at ``columns``."""
    return BlockProjection.of(J, columns) if isinstance(columns, OutputBlocks) else Projection.of(J, columns)


def model_decrease(r: Tensor, J: Tensor, step: Tensor) -> Tensor:
    """0.5 ||r||^2 - 0.5 ||r + J step||^2 (per member of a batch): the linear model's decrease."""
    js = (J @ step.unsqueeze(-1)).squeeze(-1)
    return -0.5 * (js * (2.0 * r + js)).sum(-1)


class ProjectedSolver:
    """``step(mu)`` for the residual and Jacobian J of one iterate with the output layer's
    ``columns`` eliminated: the interface of :class:`DampedSolver`. ``output`` is the output
    layer's exact correction there, -A^+ r, and ``r`` the residual with it made, P r (exact:
    r is affine in that layer); J is kept as taken, its hidden block off by that correction,
    which costs a second Jacobian to redo and only the next step's accuracy not to (the ratio
    test of the step judges it)."""

    def __init__(self, r: Tensor, J: Tensor, columns: LinearColumns) -> None:
        self._proj = projection_of(J, columns)
        self.output = self._proj.correction(r)
        self.r, self.J = self._proj.off(r.unsqueeze(1)).squeeze(1), J
        # P H is zero in the output block, so the inner step is too: the inner system is taken
        # without those columns (a shared-basis sweep's anchors have 100 of 748; with more rows
        # than hidden weights it is then the smaller of its two forms).
        out = output_columns(columns)
        self._out = out if out.stop - out.start < J.shape[-1] else None  # None: no hidden layer
        inner = self._proj.hidden() if self._out is None else self._proj.hidden_block()
        self._inner: DampedSolver = damped_solver(self.r, inner)
        self.dual, self.lapack = self._inner.dual, self._inner.lapack

    def initial_mu(self) -> float:
        return self._inner.initial_mu()

    def step(self, mu: float) -> Tensor | None:
        inner = self._inner.step(mu)
        if inner is None:
            return None
        s, out = inner.to(self.r), self._out
        if out is not None:
            s = torch.cat([s[: out.start], s.new_zeros(out.stop - out.start), s[out.start :]])
        s = self._proj.complete(self.r, s)
        return s if bool(torch.isfinite(s).all()) else None

    def predicted(self, step: Tensor, mu: float) -> float:
        return float(model_decrease(self.r, self.J, step))


@dataclass
class Iterate:
    """One iterate of the second-order phase: ``base``, the weights that the residual and the
    Jacobian were taken at; ``theta``, the same weights with the output layer solved exactly
    (plain steps: ``base`` itself); the damped system there; and its loss, 0.5 ||r||^2."""

    base: Tensor
    theta: Tensor
    system: DampedSolver
    loss: float

    @property
    def stale(self) -> bool:
        """Whether the Jacobian's hidden block is the base's, not that of ``theta`` (the output
        layer was moved after it was taken): a step rejected from here is retried from a
        Jacobian taken at ``theta`` before the damping grows (where the residual stays large,
        noisy data say, the stale block can point the steps wrong, and every step fails)."""
        return self.theta is not self.base


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite: a finite sum says so (an infinite or NaN entry
    makes the sum one), in a tenth of the time of the entrywise test (740 x 748: 0.1 ms against
    1.3 ms), which only a sum that overflows still needs."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def iterate_at(base: Tensor, r: Tensor, J: Tensor, columns: LinearColumns | None) -> Iterate:
    """The iterate at ``base`` from its residual and Jacobian: with ``columns`` (the output
    layer of a linear problem) that layer solved exactly and eliminated from the steps. Where r
    or J is not finite, the plain iterate (its loss is not finite either: a trial step there is
    rejected, and a run that starts there has diverged)."""
    if columns is None or not (all_finite(r) and all_finite(J)):
        system: DampedSolver = damped_solver(r, J)
        theta = base
    else:
        projected = ProjectedSolver(r, J, columns)
        theta = base.clone()
        theta[output_columns(columns)] += projected.output
        system = projected
    return Iterate(base, theta, system, 0.5 * float(system.r @ system.r))
