"""Batched training: Adam, then Levenberg-Marquardt, for many independent weight vectors at once.

The members of a sweep have independent weights, so Adam on the sum of their losses is Adam on
each (its update is elementwise), and their Levenberg-Marquardt systems are independent: one
batched Cholesky factorisation solves them all, each with its own damping. Every member keeps
its own bookkeeping (:class:`odeserve.solver.train._Run`: best weights, history, target,
budget, time limit, plateau rule) and leaves the batch when it stops; the batch ends when the
last one has stopped. The hooks see the batch: the iteration count, the largest loss of the
members still training, and a cancel that stops them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from odeserve.hooks import Hooks, Phase, Step
from odeserve.outcome import Outcome
from odeserve.solver.adam import Adam
from odeserve.solver.projection import Projection, model_decrease
from odeserve.solver.ridge import ridged
from odeserve.solver.train import STALL_LOSS, TrainResult, _Damping, _Run
from odeserve.spec import Options


class BatchResidual(Protocol):
    def __call__(self, theta: Tensor, members: Tensor) -> Tensor: ...

    def jacobian(self, theta: Tensor, members: Tensor) -> tuple[Tensor, Tensor]: ...

    def linearized(self, theta: Tensor, members: Tensor) -> tuple[Tensor, Callable[[], Tensor]]: ...

    @property
    def linear_columns(self) -> slice | None:
        """The output layer's columns for a linear problem (eliminated from the steps)."""
        ...


class _Batch:
    """The members still training, and the batch-level view the hooks get."""

    def __init__(self, theta0: Tensor, options: Options, hooks: Hooks) -> None:
        n = theta0.shape[0]
        self.runs = [_Run(options, Hooks(), None, STALL_LOSS) for _ in range(n)]
        self.active = list(range(n))
        self.hooks = hooks
        self.iteration = 0
        #: Every member's best weights so far, one row each: updated by one indexed copy per
        #: iteration, not one copy per member (on a GPU, a kernel launch each).
        self.best = theta0.detach().clone()

    def record(self, theta: Tensor, idx: Tensor, losses: list[float], phase: Phase) -> list[bool]:
        """Record one iteration of every active member (rows of ``theta``, ``losses``; ``idx``
        their ids, :meth:`index`); return which of them stopped. A cancel stops them all."""
        improved = [j for j, b in enumerate(self.active) if losses[j] < self.runs[b].best_loss]
        stopped = [self.runs[b].record(None, losses[j], phase) for j, b in enumerate(self.active)]
        if improved:
            rows = torch.tensor(improved, dtype=torch.long, device=theta.device)
            self.best[idx[rows]] = theta[rows].detach()
        self.iteration += 1
        if self.hooks.on_step is not None:
            live = [v for v, s in zip(losses, stopped) if not s] or losses
            elapsed = self.runs[self.active[0]].elapsed
            self.hooks.on_step(Step(self.iteration, max(live), elapsed, phase, theta[0].detach()))
        if self.hooks.should_stop is not None and self.hooks.should_stop():
            for j, b in enumerate(self.active):
                if not stopped[j]:
                    self.runs[b].stop = (Outcome.CANCELED, "canceled; the best model reached so far is kept")
                stopped[j] = True
        return stopped

    def index(self, like: Tensor) -> Tensor:
        return torch.tensor(self.active, dtype=torch.long, device=like.device)


def _adam(residual: BatchResidual, theta: Tensor, batch: _Batch, options: Options, steps: int) -> Tensor:
    theta = theta.detach().clone()
    opt = Adam(theta, options.learning_rate, steps)
    for _ in range(steps):
        if not batch.active:
            break
        leaf = theta.detach().requires_grad_(True)
        idx = batch.index(leaf)
        r = residual(leaf[idx], idx)
        losses = (r * r).mean(1)
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
        stopped = batch.record(theta[idx], idx, losses.detach().tolist(), "adam")
        opt.step(theta, grad)
        batch.active = [b for b, s in zip(batch.active, stopped) if not s]
    return theta


class _Systems:
    """The active members' damped least-squares systems, in the smaller of the two equivalent
    forms (as :func:`odeserve.solver.damped.damped_solver`): r (b, R), J (b, R, P), the Gram
    matrices and J^T r, formed once per Jacobian and reused across damping retries. With
    ``columns`` (a linear problem's output layer) that layer is eliminated, as
    :class:`odeserve.solver.projection.ProjectedSolver` does for one: ``output`` is each
    member's exact correction of it, ``r`` the residual with it made, and the Gram matrices are
    those of the projected hidden block (``inner``)."""

    def __init__(self, r: Tensor, J: Tensor, columns: slice | None = None) -> None:
        self.dual = J.shape[1] < J.shape[2]
        bad: Tensor | None = None
        if columns is not None:  # the projection's SVD needs finite rows
            r, J, bad = finite_members(r, J)
        self.J = J
        self.proj = Projection.of(J, columns) if columns is not None else None
        self.output: Tensor | None = None
        if self.proj is None:
            self.r, self.inner = r, J
        else:
            self.output = self.proj.correction(r)
            self.r = self.proj.off(r.unsqueeze(2)).squeeze(2)
            self.inner = self.proj.hidden()
        self.gram, self.g = self._formed(self.r, self.inner)
        if bad is not None and bool(bad.any()):  # those members' losses are not finite: diverged
            self.r = self.r.masked_fill(bad.unsqueeze(1), math.nan)
        self.eye = torch.eye(self.gram.shape[1], dtype=J.dtype, device=J.device)

    def _formed(self, r: Tensor, J: Tensor) -> tuple[Tensor, Tensor]:
        Jt = J.transpose(1, 2)
        return (J @ Jt if self.dual else Jt @ J), (Jt @ r.unsqueeze(2)).squeeze(2)

    def initial_mu(self) -> list[float]:
        return [1e-3 * max(d, 1e-30) for d in self.gram.diagonal(dim1=1, dim2=2).amax(1).tolist()]

    def steps(self, mu: Tensor) -> tuple[Tensor, Tensor]:
        """Per member, the step of (J^T J + mu I) d = -J^T r (zero where the factorisation
        failed) and whether it succeeded."""
        L, info = torch.linalg.cholesky_ex(self.gram + mu.reshape(-1, 1, 1) * self.eye)
        ok = info == 0
        if self.dual:
            step = -(self.inner.transpose(1, 2) @ torch.cholesky_solve(self.r.unsqueeze(2), L)).squeeze(2)
        else:
            step = -torch.cholesky_solve(self.g.unsqueeze(2), L).squeeze(2)
        if self.proj is not None:
            step = self.proj.complete(self.r, step)
        ok = ok & torch.isfinite(step).all(1)
        return torch.where(ok.unsqueeze(1), step, torch.zeros_like(step)), ok

    def predicted(self, step: Tensor, mu: Tensor) -> Tensor:
        """Each member's decrease of 0.5 ||r||^2 that the linear model predicts for its step."""
        if self.proj is not None:
            return model_decrease(self.r, self.J, step)
        return 0.5 * (step * (mu.unsqueeze(1) * step - self.g)).sum(1)

    def settled(self, theta: Tensor) -> Tensor:
        """Weights (b, P) at which the systems were formed, with the output layer's correction."""
        if self.proj is None or self.output is None:
            return theta
        theta = theta.clone()
        theta[:, self.proj.columns] += self.output
        return theta

    def replace(self, rows: Tensor, new: _Systems) -> None:
        """The members at ``rows`` (a mask) take ``new``'s systems (one per such member)."""
        self.r[rows], self.J[rows], self.gram[rows], self.g[rows] = new.r, new.J, new.gram, new.g
        if self.proj is not None and new.proj is not None and self.output is not None and new.output is not None:
            self.inner[rows] = new.inner
            self.proj.replace(rows, new.proj)
            self.output[rows] = new.output

    def keep(self, rows: Tensor) -> _Systems:
        """Only the members at ``rows`` (a mask or indices)."""
        self.r, self.J, self.gram, self.g = self.r[rows], self.J[rows], self.gram[rows], self.g[rows]
        self.inner = self.J if self.proj is None else self.inner[rows]
        if self.proj is not None and self.output is not None:
            self.proj = self.proj.keep(rows)
            self.proj.J = self.J  # one copy of the kept Jacobians, shared
            self.output = self.output[rows]
        return self


def finite_members(r: Tensor, J: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(r, J) with every member whose rows are not all finite zeroed (the SVD of the projection
    would fail on it), and which members those are (:class:`_Systems` gives them a loss that is
    not finite: a trial step there is rejected, and a member that starts there has diverged)."""
    bad = ~(torch.isfinite(r).all(1) & torch.isfinite(J).all(2).all(1))
    if not bool(bad.any()):
        return r, J, bad
    return r.masked_fill(bad.unsqueeze(1), 0.0), J.masked_fill(bad.reshape(-1, 1, 1), 0.0), bad


def _trial(
    residual: BatchResidual, candidate: Tensor, idx: Tensor, columns: slice | None
) -> tuple[Tensor, Callable[[Tensor], _Systems]]:
    """The active members' losses at their trial weights and, on demand for the members at a
    mask, their systems there. With the output layer eliminated, the loss is the one with that
    layer solved at the trial weights, which needs every member's Jacobian at once."""
    r_new, finish = residual.linearized(candidate, idx)
    if columns is None:
        return 0.5 * (r_new * r_new).sum(1), lambda rows: _Systems(r_new[rows], finish()[rows])
    new = _Systems(r_new, finish(), columns)
    return 0.5 * (new.r * new.r).sum(1), lambda rows: new.keep(rows)


def _levenberg_marquardt(residual: BatchResidual, theta: Tensor, batch: _Batch) -> Tensor:
    columns = residual.linear_columns
    base = theta.detach().clone()  # where each member's Jacobian was taken
    idx = batch.index(base)
    systems = _Systems(*residual.jacobian(base[idx], idx), columns)
    theta = base.clone()
    theta[idx] = systems.settled(base[idx])
    rows = systems.r.shape[1]
    damping = {b: _Damping(mu) for b, mu in zip(batch.active, systems.initial_mu())}
    retaken = dict.fromkeys(batch.active, False)
    while batch.active:
        idx = batch.index(theta)
        mu = torch.tensor([damping[b].mu for b in batch.active], dtype=theta.dtype, device=theta.device)
        step, ok = systems.steps(mu)
        F = 0.5 * (systems.r * systems.r).sum(1)
        candidate = theta[idx] + step
        F_new, moved = _trial(residual, candidate, idx, columns)
        predicted = systems.predicted(step, mu)
        rho = torch.where(ok & (predicted > 0) & torch.isfinite(F_new), (F - F_new) / predicted, -1.0)
        accepted = rho > 0
        # One transfer for the whole batch: a per-member read of a GPU tensor waits each time.
        gains, ratios = ((F - F_new) / F.clamp_min(1e-300)).tolist(), rho.tolist()
        # A member rejected at an iterate whose output layer moved after its Jacobian was taken
        # retakes the Jacobian there first (as the solo loop does), before its damping grows.
        retake = [ratio <= 0 and columns is not None and not retaken[b] for b, ratio in zip(batch.active, ratios)]
        for j, (b, ratio) in enumerate(zip(batch.active, ratios)):
            if ratio > 0:
                damping[b].accepted(ratio, gains[j])
            elif not retake[j]:
                damping[b].rejected()
            retaken[b] = retake[j] or (retaken[b] and ratio <= 0)
        if any(ratio > 0 for ratio in ratios):
            new = moved(accepted)
            base[idx[accepted]] = candidate[accepted]
            theta[idx[accepted]] = new.settled(candidate[accepted])
            systems.replace(accepted, new)
        del moved  # the taped pass (per-row weight copies and graph) before the next one
        if any(retake):
            again = torch.tensor(retake, dtype=torch.bool, device=theta.device)
            at = idx[again]
            new = _Systems(*residual.jacobian(theta[at], at), columns)
            base[at] = theta[at]
            theta[at] = new.settled(theta[at])
            systems.replace(again, new)
        at = systems.r
        if columns is not None:  # the loss as the network computes it at the weights recorded
            with torch.no_grad():
                at = torch.where(torch.isfinite(systems.r), residual(theta[idx], idx), systems.r)
        losses = ((at * at).sum(1) / rows).tolist()
        stopped = batch.record(theta[idx], idx, losses, "lm")
        for j, b in enumerate(batch.active):
            run = batch.runs[b]
            if not stopped[j] and damping[b].exhausted:
                run.stop = run.no_progress("the second-order phase can reduce the loss no further")
                stopped[j] = True
        if any(stopped):
            systems.keep(torch.tensor([not s for s in stopped], dtype=torch.bool, device=theta.device))
            batch.active = [b for b, s in zip(batch.active, stopped) if not s]
    return theta


def train_batch(residual: BatchResidual, theta0: Tensor, options: Options, hooks: Hooks) -> list[TrainResult]:
    """Train every row of ``theta0`` (B, P) on its own member's residual; one result each.
    Levenberg-Marquardt (``optimizer`` 'lm') or Adam alone ('adam'); 'lbfgs' has no batched
    form here (a sweep with it is refused when the problem is analysed)."""
    batch = _Batch(theta0, options, hooks)
    for run in batch.runs:  # a linear problem's converged members stop as its solo solves do
        run.ridged = ridged(residual)
    adam_steps = options.max_iterations if options.optimizer == "adam" else options.adam_iterations
    theta = _adam(residual, theta0, batch, options, adam_steps)
    if batch.active and options.optimizer != "adam":
        theta = _levenberg_marquardt(residual, theta, batch)
    results = []
    for b, run in enumerate(batch.runs):
        if run.stop is None:
            run.stop = (Outcome.BUDGET, "finished the first-order phase")
        outcome, message = run.stop
        best = batch.best[b] if math.isfinite(run.best_loss) else theta[b]
        loss = run.best_loss if math.isfinite(run.best_loss) else math.nan
        results.append(TrainResult(best, outcome, message, run.iteration, loss, run.elapsed, run.history, None))
    return results
