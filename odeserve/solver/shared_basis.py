"""Sweeps of a linear problem with one shared basis: the members share the hidden layers and each
solves its own output layer exactly.

A linear problem's residual is affine in the output layer (:mod:`odeserve.solver.projection`):
for given hidden layers h, each member's best output layer is a linear least-squares solution.
So a family of members that differ only in their parameters' values needs one set of hidden
layers good for all of them, the features, and then one small least-squares fit per member.

Training (variable projection with many right-hand sides, Golub and LeVeque, 1979): a few
*anchor* members, evenly spread over the sweep (the first and last included), train together:
their residuals stacked, one Levenberg-Marquardt run over ``[h, w_1, ..., w_A]`` whose output
blocks are all eliminated. Then every member's output layer is fitted at those hidden layers,
starting from the anchors' own output layers interpolated to its place in the sweep (the fitted
layers can be large and nearly cancelling, and the least-squares solution is taken to the output
block's numerical rank: started from zero it misses the cancelling part). A member whose loss
after the fit is more than ``PROMOTE`` times the worst anchor's is one that the shared layers
do not represent as well: it trains on, on its own, from there (second-order steps only, with an
equal share of the time left), as a solo solve would. So a family that one basis serves costs
the anchors' training and a fit per member; one that it does not costs about what its members'
own solves would.

On a CPU this is the default for a linear sweep of at least
:data:`odeserve.devices.SHARED_FROM_MEMBERS` members: 64 members of the public decay problem
train in a few solo solves' time, each as accurate as its own solve or more (BENCHMARKS.md,
"Sweeps"). Each member still becomes a plain :class:`Solution` of its own problem, with its
weights (the shared hidden layers and its own output layer, or its own training's): its error
estimate judges it, and its message says how it was trained.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from odeserve.devices import SHARED_ANCHORS
from odeserve.hooks import Hooks
from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.parametric import chebyshev_points, domain_points, fixed_at
from odeserve.problem import Problem
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.marching import Offsets
from odeserve.solver.projection import Projection
from odeserve.solver.residual import Residual
from odeserve.solver.solution import Solution
from odeserve.solver.train import STALL_LOSS, ResidualModel, TrainResult, train
from odeserve.solver.trial import Trial

#: A member whose loss after its fit exceeds this many times the worst anchor's trains on its own.
PROMOTE = 10.0


@dataclass
class Member:
    """One member of the sweep: its plain problem, its trial (constraints and scales), its
    constraint plan and its residual on the sweep's collocation points."""

    problem: Problem
    trial: Trial
    plan: ConstraintPlan
    residual: Residual


def anchor_indices(n: int, count: int = SHARED_ANCHORS) -> list[int]:
    """``count`` members evenly spread over ``n`` (the first and the last among them)."""
    if n <= count:
        return list(range(n))
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


class SharedResidual:
    """The anchors' residuals stacked, as one residual of ``[h, w_1, ..., w_A]``: the hidden
    layers once, then each anchor's output layer. Affine in all the output layers together."""

    def __init__(self, residuals: list[Residual], out: slice) -> None:
        self.residuals = residuals
        self.hidden = out.start
        self.width = out.stop - out.start
        self.linear_columns: slice | None = slice(self.hidden, self.hidden + len(residuals) * self.width)

    def member(self, theta: Tensor, i: int) -> Tensor:
        """Anchor ``i``'s own weights: the hidden layers and its output layer."""
        lo = self.hidden + i * self.width
        return torch.cat([theta[: self.hidden], theta[lo : lo + self.width]])

    def __call__(self, theta: Tensor) -> Tensor:
        return torch.cat([res(self.member(theta, i)) for i, res in enumerate(self.residuals)])

    def jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(r, J): each anchor's rows depend on the hidden layers and on its own output layer."""
        rs, blocks = [], []
        for i, res in enumerate(self.residuals):
            r, J = res.jacobian(self.member(theta, i))
            block = J.new_zeros(J.shape[0], theta.shape[0])
            block[:, : self.hidden] = J[:, : self.hidden]
            lo = self.hidden + i * self.width
            block[:, lo : lo + self.width] = J[:, self.hidden :]
            rs.append(r)
            blocks.append(block)
        return torch.cat(rs), torch.cat(blocks)

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


def fit_output(residual: Residual, hidden: Tensor, start: Tensor) -> tuple[Tensor, float]:
    """The member's weights with the hidden layers ``hidden`` and its output layer solved by least
    squares from ``start`` (one refinement: the residual of the first solution, solved again),
    and its loss (mean squared residual)."""
    theta = torch.cat([hidden, start])
    columns = residual.linear_columns
    assert columns is not None
    r, J = residual.jacobian(theta)
    if not bool(torch.isfinite(r).all() and torch.isfinite(J).all()):
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


@dataclass
class _Fit:
    thetas: list[Tensor]
    losses: list[float]


def _fit_all(members: list[Member], hidden: Tensor, anchors: list[int], outputs: list[Tensor]) -> _Fit:
    starts = _starts(anchors, outputs, len(members))
    fits = [fit_output(m.residual, hidden, s) for m, s in zip(members, starts)]
    return _Fit([t for t, _ in fits], [loss for _, loss in fits])


def _needs_own_training(fit: _Fit, anchors: list[int]) -> list[int]:
    """The members whose fitted loss is more than ``PROMOTE`` times the worst anchor's (finite)."""
    floor = max(fit.losses[a] for a in anchors)
    return [
        i for i, loss in enumerate(fit.losses) if i not in anchors and math.isfinite(loss) and loss > PROMOTE * floor
    ]


def _member_result(joint: TrainResult, theta: Tensor, loss: float, anchors: list[int], i: int) -> TrainResult:
    """Member ``i``'s result from the joint run: its outcome, judged on the member's own loss."""
    outcome, message = joint.outcome, joint.message
    role = "an anchor" if i in anchors else f"its output layer fitted to the hidden layers of the anchors {anchors}"
    if outcome == Outcome.CONVERGED and not math.isfinite(loss):
        outcome, message = Outcome.DIVERGED, f"its fit's loss is {loss}: check the parameters' values"
    elif outcome == Outcome.CONVERGED and not loss <= STALL_LOSS:
        outcome, message = Outcome.STALLED, f"stalled at loss {loss:.3g} with the sweep's shared hidden layers"
    message = f"{message} (shared basis: {role})"
    return TrainResult(theta, outcome, message, joint.iterations, loss, joint.elapsed, joint.history)


class _Clock:
    """The sweep's iterations, seconds and hooks over its runs: the anchors' joint run, then the
    members that train on their own, each with an equal share of the time left."""

    def __init__(self, problem: Problem, hooks: Hooks | None) -> None:
        self.options = problem.options
        self.offsets = Offsets(hooks)

    def train(self, residual: ResidualModel, theta: Tensor, share: int = 1, first: bool = True) -> TrainResult:
        """Train ``residual`` from ``theta``: the first run with Adam's steps, the later ones with
        the second-order phase only, from the shared layers, each with 1 / ``share`` of the time
        left; the result's iterations, seconds and history count on from the runs before."""
        opts, before, t0 = self.options, self.offsets.iterations, self.offsets.elapsed
        options = opts.model_copy(
            update={
                "compile": False,  # each run's residual is new: a compile would not be reused
                "time_limit_s": max((opts.time_limit_s - t0) / share, 1e-3),
                "max_iterations": max(opts.max_iterations - (0 if first else before), 1),
                "adam_iterations": opts.adam_iterations if first else 0,
            }
        )
        result = train(residual, theta, options, hooks=self.offsets.hooks())
        self.offsets.advance(result)
        result.history = [(it + before, loss, t + t0) for it, loss, t in result.history]
        result.iterations, result.elapsed = self.offsets.iterations, self.offsets.elapsed
        return result


def solve_shared(problem: Problem, device: torch.device, hooks: Hooks | None = None) -> list[Solution] | None:
    """Every member of the linear sweep ``problem`` solved with shared hidden layers (module doc);
    None where the anchors' joint run diverged (an anchor's values make its residual blow up, say:
    the caller then trains the members one by one, so that the others need not share its fate)."""
    members = _members(problem, device)
    theta0, out = members[0].trial.theta.detach(), output_layer(members[0].trial.sizes)
    anchors = anchor_indices(len(members))
    clock = _Clock(problem, hooks)
    shared = SharedResidual([members[a].residual for a in anchors], out)
    joint = clock.train(shared, torch.cat([theta0[: out.start]] + [theta0[out]] * len(anchors)))
    if joint.outcome == Outcome.DIVERGED:
        return None
    hidden = joint.theta[: out.start]
    outputs = [shared.member(joint.theta, j)[out.start :] for j in range(len(anchors))]
    fit = _fit_all(members, hidden, anchors, outputs)
    results = [_member_result(joint, t, loss, anchors, i) for i, (t, loss) in enumerate(zip(fit.thetas, fit.losses))]
    own = _needs_own_training(fit, anchors) if joint.outcome == Outcome.CONVERGED else []
    for j, i in enumerate(own):
        result = clock.train(members[i].residual, fit.thetas[i], share=len(own) - j, first=False)
        result.history = joint.history + result.history
        result.message += f" (shared basis: started from the anchors' hidden layers {anchors}, then trained on its own)"
        results[i] = result
    solutions = []
    for m, result in zip(members, results):
        trial = copy.deepcopy(m.trial)
        trial.theta.copy_(result.theta)
        solutions.append(Solution(m.problem, trial, m.plan, result))
    return solutions
