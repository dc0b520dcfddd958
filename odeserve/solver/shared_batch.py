"""Shared-basis sweeps as batches: a GPU's way of :mod:`odeserve.solver.shared_basis`.

The same training as there (anchors trained together on shared hidden layers, every member's
output layer fitted to them, the members that they serve less well trained on their own), with
each stage one batched computation over the sweep's batched residual
(:class:`odeserve.solver.sweep.SweepResidual`) instead of one member after another: the anchors'
rows come from one batched pass (:class:`SharedSweepResidual`), every member's fit is one batched
least-squares solve (:func:`fit_outputs`), and the members that train on their own train as one
batch (:func:`odeserve.solver.batch_train.train_batch`). On a GPU, where one member's pass costs
about what many members' do (kernel launches, not arithmetic), this is what lets a shared-basis
sweep of hundreds of members cost about one solve; on a CPU the batched residual's per-row weight
copies cost more than they save, and the members go one by one.

As in a batched sweep, every member shares the sweep's constraint plan and equation scales (a
member-by-member sweep builds its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.problem import Problem
from odeserve.solver.batch_train import finite_members, train_batch
from odeserve.solver.projection import OutputBlocks, Projection
from odeserve.solver.shared_basis import Fit, SweepClock, fresh_result, own_result, own_target, progress
from odeserve.solver.solution import Solution
from odeserve.solver.sweep import SweepResidual, batch_residual, batch_solutions
from odeserve.solver.train import TrainResult

#: The most Jacobian entries one batched fit takes at once (1 GiB in float64): a sweep's members
#: are fitted in chunks of this many rows x weights.
FIT_ELEMENTS = 2**27


class SharedSweepResidual:
    """The anchors' rows of a batched sweep residual as one residual of ``[h, w_1, ..., w_A]``
    (as :class:`odeserve.solver.shared_basis.SharedResidual`), all anchors' rows and Jacobians
    from one batched pass."""

    def __init__(self, sweep: SweepResidual, anchors: list[int], out: slice) -> None:
        self.sweep = sweep
        self.members = torch.tensor(anchors, dtype=torch.long, device=sweep.x.device)
        self.hidden, self.width, self.count = out.start, out.stop - out.start, len(anchors)
        columns = slice(self.hidden, self.hidden + self.count * self.width)
        self.linear_columns = OutputBlocks(columns, self.count)  # every member has the sweep's rows
        self.ridged = sweep.ridged

    def thetas(self, theta: Tensor) -> Tensor:
        """(A, P): each anchor's own weights, the hidden layers and its output layer."""
        hidden = theta[: self.hidden].expand(self.count, -1)
        return torch.cat([hidden, theta[self.hidden :].reshape(self.count, self.width)], 1)

    def __call__(self, theta: Tensor) -> Tensor:
        return self.sweep(self.thetas(theta), self.members).reshape(-1)

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(r, J): each anchor's rows depend on the hidden layers and on its own output layer."""
        r, J = self.sweep.jacobian(self.thetas(theta), self.members)
        count, rows, _ = J.shape
        outputs = J.new_zeros(count, rows, count, self.width)
        at = torch.arange(count, device=J.device)
        outputs[at, :, at, :] = J[..., self.hidden :]  # block diagonal: anchor a's rows, its layer
        return r.reshape(-1), torch.cat([J[..., : self.hidden], outputs.reshape(count, rows, -1)], 2).flatten(0, 1)

    jacobian_functional = jacobian

    def linearized(self, theta: Tensor) -> None:
        return None


def _mean_squares(r: Tensor) -> Tensor:
    """Each member's loss (mean squared residual); not finite where its rows are not."""
    loss = (r * r).mean(1)
    return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))


def _fit_chunk(sweep: SweepResidual, thetas: Tensor, members: Tensor, out: slice) -> tuple[Tensor, Tensor]:
    """:func:`odeserve.solver.shared_basis.fit_output` for the rows of ``thetas`` at once: each
    member's output layer solved by least squares from its start, with one refinement."""
    r, J, bad = finite_members(*sweep.jacobian(thetas, members))
    projection = Projection.of(J, out)
    best, best_loss = thetas, _mean_squares(r).masked_fill(bad, math.inf)
    for _ in range(2):
        moved = best.clone()
        moved[:, out] += projection.correction(r)
        with torch.no_grad():
            r_moved = sweep(moved, members)
        loss = _mean_squares(r_moved)
        better = (loss < best_loss) & ~bad
        if not bool(better.any()):
            break
        best = torch.where(better.unsqueeze(1), moved, best)
        best_loss = torch.where(better, loss, best_loss)
        r = torch.where(better.unsqueeze(1), r_moved, r)
    return best, best_loss


def fit_outputs(
    sweep: SweepResidual, hidden: Tensor, starts: Tensor, out: slice, go_on: Callable[[], bool] = lambda: True
) -> tuple[Tensor, list[float], list[bool]]:
    """Every member's weights with the hidden layers ``hidden`` and its output layer fitted from
    its row of ``starts`` (n, W), in chunks of at most :data:`FIT_ELEMENTS` Jacobian entries,
    their losses, and whether each was fitted: a chunk is fitted while ``go_on()`` says so (the
    sweep's time limit and cancel), else its members keep their starts."""
    n = starts.shape[0]
    thetas = torch.cat([hidden.expand(n, -1), starts], 1)
    chunk = max(1, FIT_ELEMENTS // (sweep.rows * thetas.shape[1]))
    parts, losses, fitted = [], [], []
    for lo in range(0, n, chunk):
        members = torch.arange(lo, min(lo + chunk, n), dtype=torch.long, device=thetas.device)
        if go_on():
            theta, loss = _fit_chunk(sweep, thetas[members], members, out)
            fitted += [True] * len(members)
        else:
            theta = thetas[members]
            with torch.no_grad():
                loss = _mean_squares(sweep(theta, members))
            fitted += [False] * len(members)
        parts.append(theta)
        losses += loss.tolist()
    return torch.cat(parts), losses, fitted


#: Members whose fit :meth:`SweepBatch.fit_reserve` times (a batch's cost grows at most in
#: proportion to its members, so scaling it up errs on the safe side).
RESERVE_MEMBERS = 8


class SweepBatch:
    """A shared-basis sweep's members as one batch (module doc): the interface of
    :class:`odeserve.solver.shared_basis.MemberBasis`."""

    def __init__(self, problem: Problem, device: torch.device) -> None:
        self.problem = problem
        self.sweep, self.trial, self.plan = batch_residual(problem, device)
        self.seed = self.trial.theta.detach()
        self.out = output_layer(self.trial.sizes)
        self.count = len(problem.sweep)

    def joint(self, anchors: list[int]) -> SharedSweepResidual:
        return SharedSweepResidual(self.sweep, anchors, self.out)

    def fit_reserve(self) -> float:
        """Twice what fitting every member takes: a fit of :data:`RESERVE_MEMBERS` members at the
        initial weights, timed and scaled to all of them."""
        few = min(self.count, RESERVE_MEMBERS)
        t0 = time.perf_counter()
        fit_outputs(self.sweep, self.seed[: self.out.start], self.seed[self.out].expand(few, -1), self.out)
        if self.seed.is_cuda:
            torch.cuda.synchronize(self.seed.device)
        return 2.0 * (time.perf_counter() - t0) * self.count / few

    def fit(self, hidden: Tensor, starts: list[Tensor], clock: SweepClock) -> Fit:
        """Every member's output layer fitted on ``hidden``, a chunk of members at a time while
        the sweep's time limit lasts and no cancel has come (the others keep their interpolated
        starts)."""

        def go_on() -> bool:
            return clock.left > 0 and not clock.canceled

        thetas, losses, fitted = fit_outputs(self.sweep, hidden, torch.stack(starts), self.out, go_on)
        return Fit(list(thetas.unbind(0)), losses, fitted)

    def train_own(
        self, fit: Fit, joint: TrainResult, own: list[int], anchors: list[int], clock: SweepClock
    ) -> dict[int, TrainResult]:
        """The members ``own`` trained on their own, as one batch: from their fits with the
        iterations the anchors left, or, where the anchors' run stalled, from the seed with the
        whole budget (as a batched sweep trains them)."""
        total, fresh = clock.options.max_iterations, joint.outcome == Outcome.STALLED
        budget = total if fresh else total - joint.iterations
        if not own or budget <= 0:
            return {}
        starts = torch.stack([self.seed if fresh else fit.thetas[i] for i in own])
        target = own_target(fit, anchors, fresh)
        options = clock.run_options(budget, first=fresh, target=target)
        hooks = clock.hooks(progress(joint.iterations, 0, 1, budget, total))
        runs = train_batch(self.sweep.subset(own), starts, options, hooks)
        return {
            i: fresh_result(run) if fresh else own_result(joint, fit.losses[i], run, anchors, target)
            for i, run in zip(own, runs)
        }

    def solutions(self, results: list[TrainResult]) -> list[Solution]:
        return batch_solutions(self.problem, self.trial, self.plan, results)
