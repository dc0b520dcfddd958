"""Sweeps of a linear problem with one shared basis: the members share the hidden layers and each
solves its own output layer exactly.

A linear problem's residual is affine in the output layer (:mod:`odeserve.solver.projection`):
for given hidden layers h, each member's best output layer is a linear least-squares solution.
So a family of members that differ only in their parameters' values needs one set of hidden
layers good for all of them, the features, and then one small least-squares fit per member.

Training (variable projection with many right-hand sides, Golub and LeVeque, 1979): a few
*anchor* members, evenly spread over the sweep (the first and last included), train together:
their residuals stacked, one Levenberg-Marquardt run over ``[h, w_1, ..., w_A]`` whose output
blocks are all eliminated (block by block: :class:`odeserve.solver.projection.OutputBlocks`).
Then every member's output layer is fitted at those hidden layers, starting from the anchors'
own output layers interpolated to its place in the sweep (the fitted layers can be large and
nearly cancelling, and the least-squares solution is taken to the output block's numerical rank:
started from zero it misses the cancelling part). A member that the shared layers serve less
well trains on, on its own, from there (second-order steps only, each with an equal share of the
time left and the iterations the anchors left): one whose fitted loss is more than ``PROMOTE``
times the worst anchor's and above ``SERVED_LOSS``, or above ``STALL_LOSS`` (an anchor too).
It stops once its loss is down to that level too (:func:`own_target`), as the fitted members'
are: usually within a few steps, where training on to the end of a solve's slow tail cost
about a solo solve per member (and how many members need it depends on the network's seed:
0 to 61 of 64 decay members with three anchors, BENCHMARKS.md "Sweeps"). Where the anchors' run
itself stalls (one basis cannot serve them: a family too wide for the network), every member
above ``SERVED_LOSS`` trains from the seed as its separate solve would (the same weights). So a
family that one basis serves costs the anchors' training and a fit per member, plus a few steps
for some; one that it does not costs about what its members' own solves would, plus the
anchors' training. The anchors' rows are projected block by block when every anchor has as many rows
(:class:`odeserve.solver.projection.OutputBlocks`), else as one dense block (a member whose hard
conditions are ill-conditioned takes them as penalty rows).

The sweep's time limit covers all of it: set-up, the joint run (which leaves twice the measured
cost of the fits), the fits (a member whose fit the limit came before keeps its interpolated
output layer and says so) and the members' own runs. A cancel, said once, stops the fits and
every later run. Where the anchors' joint run diverges (an anchor's values blow its residual up),
the members train one by one instead, within what is left of the time limit. A member's history
is the anchors' run's (their mean loss), then its own loss after its fit, then its own run's, if
any.

This is the default for a linear sweep of at least :data:`odeserve.devices.SHARED_FROM_MEMBERS`
members: on a CPU, 64 members of the public decay problem train in a few solo solves' time
(BENCHMARKS.md, "Sweeps"). The stages run on a :class:`Basis`: on a CPU one member after another
(:class:`MemberBasis`, each member with its own residual), on a GPU each stage as one batch
(:class:`odeserve.solver.shared_batch.SweepBatch`). Each member still becomes a plain
:class:`Solution` of its own problem, with its weights (the shared hidden layers and its own
output layer, or its own training's): its error estimate judges it, and its message says how it
was trained.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from odeserve.devices import SHARED_ANCHORS
from odeserve.hooks import Hooks, Step
from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.parametric import chebyshev_points, domain_points, fixed_at
from odeserve.problem import Problem
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.projection import LinearColumns, OutputBlocks, Projection, all_finite
from odeserve.solver.residual import Residual
from odeserve.solver.ridge import Ridged, ridged
from odeserve.solver.solution import Solution
from odeserve.solver.train import STALL_LOSS, ResidualModel, TrainResult, train
from odeserve.solver.trial import Trial
from odeserve.spec import Options

#: A member whose loss after its fit exceeds this many times the worst anchor's trains on its own.
PROMOTE = 10.0
#: ... unless its loss is at most this (mean squared scaled residual, with the output layer's
#: ridge: :mod:`odeserve.solver.ridge`): the default target loss, where solo solves of the public
#: problems stop (much of it the ridge's). 1e-24 (stop 26) cost 0-4% less time over ten seeds of
#: the 64-member decay sweep, but left members that their separate solves beat by more than 10x:
#: 216 against 175 with this (BENCHMARKS.md "Sweeps").
SERVED_LOSS = 1e-26


@dataclass
class Member:
    """One member of the sweep: its plain problem, its trial (constraints and scales), its
    constraint plan and its residual on the sweep's collocation points."""

    problem: Problem
    trial: Trial
    plan: ConstraintPlan
    residual: Residual | Ridged


def anchor_indices(n: int, count: int = SHARED_ANCHORS) -> list[int]:
    """``count`` members evenly spread over ``n`` (the first and the last among them)."""
    if n <= count:
        return list(range(n))
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


class SharedResidual:
    """The anchors' residuals stacked, as one residual of ``[h, w_1, ..., w_A]``: the hidden
    layers once, then each anchor's output layer. Affine in all the output layers together."""

    def __init__(self, residuals: list[Residual | Ridged], out: slice) -> None:
        self.residuals = residuals
        self.hidden = out.start
        self.width = out.stop - out.start
        columns = slice(self.hidden, self.hidden + len(residuals) * self.width)
        # Each anchor's rows: its equations at the points, its penalty conditions (a member
        # whose hard conditions are ill-conditioned takes them as penalties: more rows), its ridge.
        rows = {r.rows for r in residuals}
        self.ridged = all(ridged(r) for r in residuals)
        self.linear_columns: LinearColumns | None = OutputBlocks(columns, len(residuals)) if len(rows) == 1 else columns

    def member(self, theta: Tensor, i: int) -> Tensor:
        """Anchor ``i``'s own weights: the hidden layers and its output layer."""
        lo = self.hidden + i * self.width
        return torch.cat([theta[: self.hidden], theta[lo : lo + self.width]])

    def __call__(self, theta: Tensor) -> Tensor:
        return torch.cat([res(self.member(theta, i)) for i, res in enumerate(self.residuals)])

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(r, J): each anchor's rows depend on the hidden layers and on its own output layer."""
        parts = [res.jacobian(self.member(theta, i)) for i, res in enumerate(self.residuals)]
        r = torch.cat([p[0] for p in parts])
        out = r.new_zeros(r.shape[0], theta.shape[0])
        row = 0
        for i, (_, J) in enumerate(parts):  # each anchor's rows copied once, into their place
            lo, rows = self.hidden + i * self.width, slice(row, row + J.shape[0])
            out[rows, : self.hidden] = J[:, : self.hidden]
            out[rows, lo : lo + self.width] = J[:, self.hidden :]
            row += J.shape[0]
        return r, out

    jacobian_functional = jacobian

    def linearized(self, theta: Tensor) -> None:
        return None


def _members(problem: Problem, device: torch.device) -> list[Member]:
    from odeserve.solver.solve import DTYPES, _residual, build_trial, equation_scales

    dtype = DTYPES[problem.options.precision]
    members = []
    for values in problem.sweep:
        plain = fixed_at(problem, values)
        trial, plan, scales = build_trial(plain, device, dtype)
        a, b = plain.domain
        xs = a + (b - a) * chebyshev_points(0.0, 1.0, domain_points(plain))
        members.append(Member(plain, trial, plan, _residual(plain, trial, plan, xs, equation_scales(plain, scales))))
    return members


def _mean_square(r: Tensor) -> float:
    return float(r @ r) / max(r.numel(), 1)


def fit_output(residual: Residual | Ridged, hidden: Tensor, start: Tensor) -> tuple[Tensor, float]:
    """The member's weights with the hidden layers ``hidden`` and its output layer solved by least
    squares from ``start`` (one refinement: the residual of the first solution, solved again),
    and its loss (mean squared residual)."""
    theta = torch.cat([hidden, start])
    columns = residual.linear_columns
    assert columns is not None
    r, J = residual.jacobian(theta)
    if not (all_finite(r) and all_finite(J)):
        return theta, math.inf
    projection = Projection.of(J, columns)
    best, best_loss = theta, _mean_square(r)
    for _ in range(2):
        moved = best.clone()
        moved[columns] += projection.correction(r)
        with torch.no_grad():
            r = residual(moved)
        loss = _mean_square(r)
        if not loss < best_loss:
            break
        best, best_loss = moved, loss
    return best, best_loss


def _starts(anchors: list[int], outputs: list[Tensor], n: int) -> list[Tensor]:
    """Each member's starting output layer: the anchors' interpolated linearly by position."""
    order = sorted(range(len(anchors)), key=lambda j: anchors[j])
    at = np.array([anchors[j] for j in order], dtype=float)
    starts = []
    for i in range(n):
        k = int(np.searchsorted(at, i))
        if k == 0 or k == len(at):
            starts.append(outputs[order[min(k, len(at) - 1)]])
            continue
        t = (i - at[k - 1]) / (at[k] - at[k - 1])
        starts.append((1.0 - t) * outputs[order[k - 1]] + t * outputs[order[k]])
    return starts


class SweepClock:
    """The sweep's seconds, iterations and hooks over its runs: set-up, the anchors' joint run,
    the fits, then the members that train on their own, each with an equal share of the time
    left. A cancel, once said, stops every later run too (the worker's poll says it once)."""

    def __init__(self, problem: Problem, hooks: Hooks | None) -> None:
        self.options = problem.options
        self.start = time.perf_counter()
        self.user = hooks or Hooks()
        self.canceled = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.options.time_limit_s - self.elapsed

    def should_stop(self) -> bool:
        self.canceled = self.canceled or (self.user.should_stop is not None and self.user.should_stop())
        return self.canceled

    def hooks(self, iterations: Callable[[int], int]) -> Hooks:
        """Hooks for one run: its steps reported at the sweep's iteration ``iterations(i)`` and
        the sweep's seconds."""
        report, t0 = self.user.on_step, self.elapsed
        on_step = None
        if report is not None:

            def on_step(step: Step) -> None:
                report(dataclasses.replace(step, iteration=iterations(step.iteration), elapsed=t0 + step.elapsed))

        return Hooks(on_step=on_step, should_stop=self.should_stop)

    def train(
        self,
        residual: ResidualModel,
        theta: Tensor,
        hooks: Hooks,
        budget: int,
        share: int = 1,
        first: bool = True,
        reserve: float = 0.0,
        target: float = 0.0,
    ) -> TrainResult:
        """Train ``residual`` from ``theta`` within ``budget`` iterations and 1 / ``share`` of the
        time left (less ``reserve`` seconds, at most half of it, kept for what follows): the
        first run (the anchors') with Adam's steps, the members' own runs with the second-order
        phase only (they start from the fit)."""
        return train(residual, theta, self.run_options(budget, share, first, reserve, target), hooks=hooks)

    def run_options(
        self, budget: int, share: int = 1, first: bool = True, reserve: float = 0.0, target: float = 0.0
    ) -> Options:
        """The options of one run (:meth:`train`); ``target``: a loss at which it stops, besides
        the problem's own target."""
        opts, left = self.options, self.left
        return opts.model_copy(
            update={
                "compile": False,  # each run's residual is new: a compile would not be reused
                "time_limit_s": max((left - min(reserve, left / 2)) / share, 1e-3),
                "max_iterations": max(budget, 1),
                "adam_iterations": opts.adam_iterations if first else 0,
                "target_loss": max(opts.target_loss, target),
            }
        )


@dataclass
class Fit:
    """Each member's weights on the shared hidden layers and its loss; ``fitted[i]`` False where
    the sweep's time limit came before its fit (its output layer is then the interpolated start)."""

    thetas: list[Tensor]
    losses: list[float]
    fitted: list[bool]


def _fit_all(members: list[Member], hidden: Tensor, starts: list[Tensor], clock: SweepClock) -> Fit:
    """Every member's output layer solved on ``hidden``, while the sweep's time limit lasts and
    no cancel has come."""
    fit = Fit([], [], [])
    for m, start in zip(members, starts):
        fitted = clock.left > 0 and not clock.canceled
        if fitted:
            theta, loss = fit_output(m.residual, hidden, start)
        else:
            theta = torch.cat([hidden, start])
            with torch.no_grad():
                loss = _mean_square(m.residual(theta))
        fit.thetas.append(theta)
        fit.losses.append(loss if math.isfinite(loss) else math.inf)
        fit.fitted.append(fitted)
    return fit


def served_loss(fit: Fit, anchors: list[int]) -> float:
    """The loss that the shared layers serve: ``PROMOTE`` times the worst anchor's, or
    ``SERVED_LOSS`` if that is more. A member above it trains on its own until it gets there
    (or below ``STALL_LOSS``, if that is less: then it has converged), as the fitted members are."""
    return max(PROMOTE * max(fit.losses[a] for a in anchors), SERVED_LOSS)


def _needs_own_training(fit: Fit, anchors: list[int], stalled: bool = False) -> list[int]:
    """The members to train on their own: a finite loss above ``STALL_LOSS`` (anchors too), or,
    for the others, above :func:`served_loss`. Where the anchors' run ``stalled``, their losses
    say nothing: every member above ``SERVED_LOSS``."""
    floor = served_loss(fit, anchors)

    def needs(i: int, loss: float) -> bool:
        if stalled:
            return loss > SERVED_LOSS
        return loss > STALL_LOSS or (i not in anchors and loss > floor)

    return [i for i, loss in enumerate(fit.losses) if fit.fitted[i] and math.isfinite(loss) and needs(i, loss)]


#: The joint run's outcomes that end by its own criterion: the members' fits are judged on their
#: own losses, and those that need it train on their own.
_SETTLED = (Outcome.CONVERGED, Outcome.STALLED)


def _role(i: int, anchors: list[int]) -> str:
    if i in anchors:
        return "shared basis: an anchor"
    return f"shared basis: its output layer fitted to the hidden layers of the anchors {anchors}"


def _member_result(joint: TrainResult, fit: Fit, i: int, anchors: list[int], limit: float) -> TrainResult:
    """Member ``i``'s result from the joint run and its fit, judged on its own loss where the
    joint run ended by its own criterion (converged or stalled)."""
    theta, loss = fit.thetas[i], fit.losses[i]
    outcome, message = joint.outcome, joint.message
    if not math.isfinite(loss):
        outcome, message = Outcome.DIVERGED, f"its loss on the shared hidden layers is {loss}: check its values"
    elif not fit.fitted[i] and outcome == Outcome.CANCELED:
        message = "canceled before its fit; the anchors' interpolated output layer is kept"
    elif not fit.fitted[i]:
        outcome, message = Outcome.TIME_LIMIT, f"the sweep's time limit ({limit:g} s) came before its fit"
    elif outcome in _SETTLED:
        outcome = Outcome.CONVERGED if loss <= STALL_LOSS else Outcome.STALLED
        message = f"{outcome.value} on the shared hidden layers at loss {loss:.3g}"
    message = f"{message} ({_role(i, anchors)})"
    return TrainResult(theta, outcome, message, joint.iterations, loss, joint.elapsed, _history(joint, loss))


def _history(joint: TrainResult, loss: float) -> list[tuple[int, float, float]]:
    """A member's history up to its fit: the anchors' run (their mean loss), then its own loss on
    their hidden layers, at the joint run's last iteration (the fit is no iteration of its own)."""
    return joint.history + [(joint.iterations, loss, joint.elapsed)]


def fresh_result(run: TrainResult) -> TrainResult:
    """A member's result after a separate solve of its own (the anchors' run stalled)."""
    run.message += (
        " (shared basis: the anchors' training stalled; trained on its own from the seed, as a separate solve)"
    )
    return run


def own_result(joint: TrainResult, fitted: float, own: TrainResult, anchors: list[int], target: float) -> TrainResult:
    """A member's result after its own run: the anchors' training, its ``fitted`` loss, then its
    own run, which stops at ``target`` (:func:`own_target`)."""
    message = own.message
    if own.outcome == Outcome.CONVERGED and own.loss <= target:
        message = (
            f"converged at loss {own.loss:.3g}, at most {target:.3g}: the loss the shared layers serve the others at"
        )
    elif own.outcome == Outcome.BUDGET:
        message = f"used the iteration budget: {joint.iterations} in the anchors' training, {own.iterations} on its own"
    message += f" (shared basis: started from the anchors' hidden layers {anchors}, then trained on its own)"
    history = _history(joint, fitted) + [(it + joint.iterations, v, t + joint.elapsed) for it, v, t in own.history]
    return TrainResult(
        own.theta,
        own.outcome,
        message,
        joint.iterations + own.iterations,
        own.loss,
        joint.elapsed + own.elapsed,
        history,
    )


def progress(start: int, done: int, n: int, budget: int, total: int) -> Callable[[int], int]:
    """The sweep's progress at a member's own iteration ``i``: the anchors' ``start``
    iterations, then the members' own iterations so far over their number, scaled from their
    ``budget`` each into what is left of ``total`` (never past it, never back)."""
    return lambda i: start + (done + i) // n * (total - start) // max(budget, 1)


def _train_own(
    members: list[Member], fit: Fit, joint: TrainResult, own: list[int], anchors: list[int], clock: SweepClock
) -> dict[int, TrainResult]:
    """The members ``own`` trained on their own, one after another: from their fit, with the
    iterations the anchors left; where the anchors' run stalled (their hidden layers serve no
    member well), from the seed as a separate solve, Adam's steps included, with the whole
    budget."""
    total, fresh = clock.options.max_iterations, joint.outcome == Outcome.STALLED
    budget = total if fresh else total - joint.iterations
    target = own_target(fit, anchors, fresh)
    done, results = 0, {}
    for j, i in enumerate(own if budget > 0 else []):
        hooks = clock.hooks(progress(joint.iterations, done, len(own), budget, total))
        share = max(clock.left / (len(own) - j), 1e-3)
        start = members[i].trial.theta.detach() if fresh else fit.thetas[i]
        run = clock.train(members[i].residual, start, hooks, budget, share=len(own) - j, first=fresh, target=target)
        if run.outcome == Outcome.TIME_LIMIT:
            run.message = f"reached its share ({share:.3g} s) of the sweep's time limit"
        results[i] = fresh_result(run) if fresh else own_result(joint, fit.losses[i], run, anchors, target)
        done += run.iterations
    return results


def own_target(fit: Fit, anchors: list[int], fresh: bool) -> float:
    """Where a member training on its own from its fit stops: at the loss that the shared layers
    serve the others (:func:`served_loss`; at most ``STALL_LOSS``), not at the end of a full
    solve's slow tail. A member trained from the seed (``fresh``) stops as its own solve would."""
    return 0.0 if fresh else min(served_loss(fit, anchors), STALL_LOSS)


def _fit_reserve(members: list[Member], theta: Tensor, out: slice) -> float:
    """Seconds to keep from the anchors' training for the members' fits: twice what fitting one
    member takes, per member (measured once, at the initial weights)."""
    t0 = time.perf_counter()
    fit_output(members[0].residual, theta[: out.start], theta[out])
    return 2.0 * len(members) * (time.perf_counter() - t0)


class Basis(Protocol):
    """A shared-basis sweep's members, however they are computed: one by one
    (:class:`MemberBasis`, a CPU's way) or as batches (:class:`odeserve.solver.shared_batch.SweepBatch`,
    a GPU's way)."""

    seed: Tensor  # the initial weights, the same for every member
    out: slice  # the output layer's columns in a member's weights
    count: int  # members

    def joint(self, anchors: list[int]) -> ResidualModel:
        """The anchors' residual over ``[h, w_1, ..., w_A]``."""
        ...

    def fit_reserve(self) -> float:
        """Seconds to keep from the anchors' training for the members' fits."""
        ...

    def fit(self, hidden: Tensor, starts: list[Tensor], clock: SweepClock) -> Fit:
        """Every member's output layer fitted on ``hidden`` from its start, while time lasts."""
        ...

    def train_own(
        self, fit: Fit, joint: TrainResult, own: list[int], anchors: list[int], clock: SweepClock
    ) -> dict[int, TrainResult]:
        """The results of the members ``own`` after training on their own."""
        ...

    def solutions(self, results: list[TrainResult]) -> list[Solution]:
        """Each member's solution of its own plain problem with its result's weights."""
        ...


class MemberBasis:
    """The members one by one, each with its own residual, trial and plan (a CPU's way)."""

    def __init__(self, problem: Problem, device: torch.device) -> None:
        self.members = _members(problem, device)
        self.seed = self.members[0].trial.theta.detach()
        self.out = output_layer(self.members[0].trial.sizes)
        self.count = len(self.members)

    def joint(self, anchors: list[int]) -> SharedResidual:
        return SharedResidual([self.members[a].residual for a in anchors], self.out)

    def fit_reserve(self) -> float:
        return _fit_reserve(self.members, self.seed, self.out)

    def fit(self, hidden: Tensor, starts: list[Tensor], clock: SweepClock) -> Fit:
        return _fit_all(self.members, hidden, starts, clock)

    def train_own(
        self, fit: Fit, joint: TrainResult, own: list[int], anchors: list[int], clock: SweepClock
    ) -> dict[int, TrainResult]:
        return _train_own(self.members, fit, joint, own, anchors, clock)

    def solutions(self, results: list[TrainResult]) -> list[Solution]:
        solutions = []
        for m, result in zip(self.members, results):
            trial = copy.deepcopy(m.trial)
            trial.theta.copy_(result.theta)
            solutions.append(Solution(m.problem, trial, m.plan, result))
        return solutions


def solve_shared(
    problem: Problem,
    device: torch.device,
    hooks: Hooks | None,
    fallback: Callable[[float, int], list[Solution]],
    batched: bool | None = None,
) -> list[Solution]:
    """Every member of the linear sweep ``problem`` solved with shared hidden layers (module doc),
    its members as batches (``batched``; default: on a GPU) or one by one. Where the anchors'
    joint run diverges (an anchor's values blow its residual up, say), the members train without
    the anchors instead, ``fallback(seconds spent, iterations reported)``, so that the others
    need not share its fate."""
    clock = SweepClock(problem, hooks)
    basis: Basis
    if (device.type == "cuda") if batched is None else batched:
        from odeserve.solver.shared_batch import SweepBatch

        basis = SweepBatch(problem, device)
    else:
        basis = MemberBasis(problem, device)
    seed, out = basis.seed, basis.out
    anchors = anchor_indices(basis.count)
    theta = torch.cat([seed[: out.start]] + [seed[out]] * len(anchors))
    budget = problem.options.max_iterations
    joint = clock.train(basis.joint(anchors), theta, clock.hooks(lambda it: it), budget, reserve=basis.fit_reserve())
    if joint.outcome == Outcome.DIVERGED:
        return fallback(clock.elapsed, joint.iterations)
    outputs = list(joint.theta[out.start :].reshape(len(anchors), -1).unbind(0))
    fit = basis.fit(joint.theta[: out.start], _starts(anchors, outputs, basis.count), clock)
    joint.elapsed = clock.elapsed  # the set-up and the fits count as the anchors' seconds
    limit = problem.options.time_limit_s
    results = [_member_result(joint, fit, i, anchors, limit) for i in range(basis.count)]
    stalled = joint.outcome == Outcome.STALLED
    own = _needs_own_training(fit, anchors, stalled) if joint.outcome in _SETTLED else []
    for i, result in basis.train_own(fit, joint, own, anchors, clock).items():
        results[i] = result
    return basis.solutions(results)
