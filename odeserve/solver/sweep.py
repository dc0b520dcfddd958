"""Sweeps: one problem for many values of its parameters, every member its own network, trained
together as one batch on a GPU (on a CPU one after another; a linear problem's with shared
hidden layers on either: below).

The members share the collocation points, the constraint plan and the initial weights (the
seed); they differ in the swept parameters' values, which the equations and conditions load per
row. Every collocation row depends only on its own member's weights, so one backward pass over
per-row copies of the weights yields every member's Jacobian at once, and the
Levenberg-Marquardt systems are solved as one batched Cholesky factorisation
(:mod:`odeserve.solver.batch_train`). Each member then stops on its own criterion, as a solo
solve would, and becomes an ordinary :class:`Solution` of its own plain problem (the swept
parameters fixed at its values): metrics, error estimate, samples and exports as usual.

The batch is what makes a GPU pay: one solo solve leaves it idle. On a CPU the batch does not
pay (a member's Gram matrix costs the same multiply-adds as a solo solve's, and the batched
Jacobian takes per-row copies of the weights where a solo solve takes outer products at one
shared weight vector): there the members train one after another, each exactly as its own solve
with escalation off would, sharing the sweep's time limit (BENCHMARKS.md, "Sweeps"). A linear
problem's sweep of 16 or more members shares its hidden layers instead, on either device
(:mod:`odeserve.solver.shared_basis`; on a GPU its stages use this batched residual,
:mod:`odeserve.solver.shared_batch`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from odeserve.devices import SweepTraining, sweep_training
from odeserve.errors import SpecError
from odeserve.evaluate import equation_env
from odeserve.expr.keys import Key
from odeserve.hooks import Hooks, Step
from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.parametric import chebyshev_points, fixed_at
from odeserve.problem import Problem
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.residual import penalty_points, point_env, run_torch
from odeserve.solver.ridge import ridge_jacobian, ridge_rows
from odeserve.solver.solution import Solution
from odeserve.solver.train import TrainResult
from odeserve.solver.trial import Trial


class SweepResidual:
    """r(theta_b) of every member b at once: (b, R) rows, equations, penalty conditions, then a
    linear problem's ridge rows (:mod:`odeserve.solver.ridge`)."""

    def __init__(self, problem: Problem, trial: Trial, plan: ConstraintPlan, x: Tensor, eq_scales: Any) -> None:
        self.problem = problem
        self.trial = trial
        self.x = x
        self.names = list(problem.sweep[0])
        self.values = torch.tensor([[m[k] for k in self.names] for m in problem.sweep], dtype=x.dtype, device=x.device)
        self.order = problem.max_order
        self.eq_scales = [float(s) for s in eq_scales]
        self.phi = trial.basis(x, self.order) if trial.has_constraints else None
        self.penalty, self.pen_points, self.pen_x, self.pen_order = penalty_points(problem, plan, x)
        self.pen_weight = float(len(x)) ** 0.5 / self.eq_scales[0]
        #: The output layer's columns where it has the ridge rows (a linear problem's:
        #: :attr:`odeserve.problem.Problem.has_ridge`), and where the steps solve it exactly
        #: (unless ``options.variable_projection`` is off: :mod:`odeserve.solver.projection`).
        self.ridge_columns = output_layer(trial.sizes) if problem.has_ridge else None
        self.linear_columns = self.ridge_columns if problem.projects else None

    @property
    def ridged(self) -> bool:
        """Whether the rows end with the output layer's ridge (a linear problem's)."""
        return self.ridge_columns is not None

    @property
    def rows(self) -> int:
        """Each member's rows: equations, penalty conditions, and a linear problem's ridge."""
        columns = self.ridge_columns
        ridge = 0 if columns is None else columns.stop - columns.start
        return len(self.x) * len(self.problem.equations) + len(self.penalty) + ridge

    def _equations(self, th: Tensor, members: Tensor) -> list[Tensor]:
        """Per equation, (b * n,) scaled residuals; ``th`` holds one weight row per point."""
        b, n = len(members), len(self.x)
        xs = self.x.repeat(b)
        phi = None if self.phi is None else [p.repeat(b, 1) for p in self.phi]
        derivs = self.trial.derivatives(th, xs, self.order, phi)
        env = equation_env(self.problem.variable, self.problem.unknowns, xs, derivs)
        q = self.values[members].repeat_interleave(n, 0)
        env.update({name: q[:, i] for i, name in enumerate(self.names)})
        return [run_torch(eq.residual, env, xs) / s for eq, s in zip(self.problem.equations, self.eq_scales)]

    def _penalties(self, th: Tensor, members: Tensor) -> list[Tensor]:
        """Per penalty condition, (b,) weighted residuals; ``th`` holds one row per penalty point."""
        if not self.penalty:
            return []
        b = len(members)
        pd = self.trial.derivatives(th, self.pen_x.repeat(b), self.pen_order)
        q = self.values[members]
        env: dict[Key, Tensor] = {name: q[:, i] for i, name in enumerate(self.names)}
        env.update(point_env(self.problem.unknowns, self.pen_points, pd, b))
        like = self.pen_x.new_zeros(b)
        return [run_torch(c.residual, env, like).reshape(-1) * self.pen_weight for c in self.penalty]

    def _copies(self, theta: Tensor, grad: bool) -> tuple[Tensor, Tensor]:
        """Per-row copies of each member's weights: for the points, and for the penalty points."""
        eq = theta.repeat_interleave(len(self.x), 0)
        pen = theta.repeat_interleave(max(len(self.pen_points), 1), 0)
        if grad:
            eq, pen = eq.detach().requires_grad_(True), pen.detach().requires_grad_(True)
        return eq, pen

    def __call__(self, theta: Tensor, members: Tensor) -> Tensor:
        """(b, R): the residual rows of the members ``members`` at their weights ``theta`` (b, P)."""
        b, n = len(members), len(self.x)
        eq, pen = self._copies(theta, grad=False)
        parts = [r.reshape(b, n) for r in self._equations(eq, members)]
        parts += [p.reshape(b, 1) for p in self._penalties(pen, members)]
        return torch.cat(parts + self._ridge(theta), 1)

    def _ridge(self, theta: Tensor) -> list[Tensor]:
        """A linear problem's ridge rows (b, W) (:mod:`odeserve.solver.ridge`); none otherwise.
        Differentiable (a batch's Adam steps take their gradient, as a solo solve's do)."""
        columns = self.ridge_columns
        return [] if columns is None else [ridge_rows(theta, columns)]

    def linearized(self, theta: Tensor, members: Tensor) -> tuple[Tensor, Callable[[], Tensor]]:
        """(r (b, R), J): the rows from one taped forward pass, and a function that finishes
        their Jacobian (b, R, P) from that pass, one backward pass per equation and penalty
        condition. A trial step's rows come from here: most steps are accepted, and the
        Jacobian at the new weights then costs no second forward pass."""
        b, n, P = len(members), len(self.x), theta.shape[1]
        eq, pen = self._copies(theta, grad=True)
        eqs = self._equations(eq, members)
        pens = self._penalties(pen, members)
        ridge = [t.detach() for t in self._ridge(theta)]
        r = torch.cat([v.detach().reshape(b, n) for v in eqs] + [p.detach().reshape(b, 1) for p in pens] + ridge, 1)
        columns = self.ridge_columns

        def jacobian() -> Tensor:
            blocks, last = [], len(eqs) + len(pens) - 1
            for i, v in enumerate(eqs):
                (g,) = torch.autograd.grad(v.sum(), eq, retain_graph=i < last)
                blocks.append(g.reshape(b, n, P))
            for i, p in enumerate(pens):
                (g,) = torch.autograd.grad(p.sum(), pen, retain_graph=len(eqs) + i < last)
                blocks.append(g.reshape(b, -1, P).sum(1, keepdim=True))
            if columns is not None:
                blocks.append(ridge_jacobian(blocks[0], columns))
            return torch.cat(blocks, 1)

        return r, jacobian

    def jacobian(self, theta: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
        """(r (b, R), J (b, R, P)): every member's rows and Jacobian at once."""
        r, finish = self.linearized(theta, members)
        return r, finish()

    def subset(self, members: list[int]) -> SweepResidual:
        """The same residual for the members ``members`` only (numbered 0, 1, ... in that order)."""
        sub = copy.copy(self)
        sub.values = self.values[torch.tensor(members, dtype=torch.long, device=self.values.device)]
        return sub


def batch_residual(problem: Problem, device: torch.device) -> tuple[SweepResidual, Trial, ConstraintPlan]:
    """The sweep's batched residual on ``device``, with the trial (the seed's weights) and the
    constraint plan that every member shares."""
    from odeserve.solver.solve import DTYPES, build_trial, equation_scales

    dtype = DTYPES[problem.options.precision]
    trial, plan, scales = build_trial(problem, device, dtype)
    x = torch.as_tensor(chebyshev_points(*problem.domain, problem.options.points), dtype=dtype, device=device)
    return SweepResidual(problem, trial, plan, x, equation_scales(problem, scales)), trial, plan


def batch_solutions(problem: Problem, trial: Trial, plan: ConstraintPlan, results: list[TrainResult]) -> list[Solution]:
    """Each member's solution of its own plain problem, with its result's weights on a copy of
    the shared ``trial``."""
    solutions = []
    for values, result in zip(problem.sweep, results):
        member = copy.deepcopy(trial)
        member.theta.copy_(result.theta)
        solutions.append(Solution(fixed_at(problem, values), member, plan, result))
    return solutions


def solve_sweep(
    problem: Problem, device: torch.device, hooks: Hooks | None = None, training: SweepTraining | None = None
) -> list[Solution]:
    """Every member of ``problem.sweep`` solved; one :class:`Solution` per member, of the plain
    problem with the swept parameters fixed at its values. ``training``: as one batch, with
    shared hidden layers (a linear problem) or one after another (default: the device's and the
    problem's way, :func:`odeserve.devices.sweep_training`)."""
    training = training or sweep_training(problem, device)
    if training == "shared":
        from odeserve.solver.shared_basis import solve_shared

        if not problem.projects:
            raise SpecError(
                ("sweep",),
                "only a linear problem's sweep with options.variable_projection can train with shared hidden layers",
            )
        # Without the anchors (one diverged): the device's way, within the time left.
        fallback = _batched if device.type == "cuda" else _one_by_one
        return solve_shared(problem, device, hooks, lambda spent, done: fallback(problem, device, hooks, spent, done))
    if training == "separate":
        return _one_by_one(problem, device, hooks)
    return _batched(problem, device, hooks)


def _batched(
    problem: Problem, device: torch.device, hooks: Hooks | None, spent: float = 0.0, reported: int = 0
) -> list[Solution]:
    """Every member trained as one batch (``spent`` and ``reported``: as :func:`_one_by_one`)."""
    from odeserve.solver.batch_train import train_batch

    residual, trial, plan = batch_residual(problem, device)
    options, total = problem.options, max(problem.options.max_iterations, 1)
    hooks = hooks or Hooks()
    if spent or reported:
        options = options.model_copy(update={"time_limit_s": max(options.time_limit_s - spent, 1e-3)})
        report = hooks.on_step

        def on_step(step: Step) -> None:
            if report is not None:
                it = reported + step.iteration * (total - reported) // total
                report(dataclasses.replace(step, iteration=it, elapsed=spent + step.elapsed))

        hooks = Hooks(on_step=on_step, should_stop=hooks.should_stop)
    theta0 = trial.theta.unsqueeze(0).repeat(len(problem.sweep), 1)
    return batch_solutions(problem, trial, plan, train_batch(residual, theta0, options, hooks))


def _one_by_one(
    problem: Problem, device: torch.device, hooks: Hooks | None, spent: float = 0.0, reported: int = 0
) -> list[Solution]:
    """The members trained one after another, each as its own plain solve (no escalation; no
    compile either: each member's values would compile anew, as a batch does not). Each gets an
    equal share of the time left, so a time limit stops the sweep's members alike, as it would
    the batch's. The hooks see the sweep's progress: the members' iterations so far over their
    number (the batch's iteration count, when the members train as one), the running member's
    loss and the sweep's seconds. A cancel stops the running member, and the rest train no
    further than their first iteration (``should_stop`` is asked once: it may say so only once).
    ``spent`` and ``reported``: seconds of the sweep's time limit already used and the sweep's
    iteration already reported (a shared-basis sweep whose anchors diverged,
    :mod:`odeserve.solver.shared_basis`): the progress goes on from there, never back."""
    from odeserve.solver.marching import Offsets
    from odeserve.solver.solve import train_attempt

    hooks = hooks or Hooks()
    start, n, done = time.perf_counter() - spent, len(problem.sweep), 0
    total = max(problem.options.max_iterations, 1)
    canceled = False

    def should_stop() -> bool:
        nonlocal canceled
        canceled = canceled or (hooks.should_stop is not None and hooks.should_stop())
        return canceled

    solutions = []
    for i, values in enumerate(problem.sweep):
        member = fixed_at(problem, values)
        left = problem.options.time_limit_s - (time.perf_counter() - start)
        share = max(left / (n - i), 1e-3)
        options = member.options.model_copy(update={"time_limit_s": share, "compile": False})
        t0, before = time.perf_counter() - start, done

        def on_step(step: Step, t0: float = t0, before: int = before) -> None:
            if hooks.on_step is not None:
                it = reported + max((before + step.iteration) // n, 1) * (total - reported) // total
                hooks.on_step(dataclasses.replace(step, iteration=it, elapsed=t0 + step.elapsed))

        timed = dataclasses.replace(member, spec=member.spec.model_copy(update={"options": options}))
        solution = train_attempt(timed, device, Offsets(Hooks(on_step=on_step, should_stop=should_stop)))
        result = solution.result
        if result.outcome == Outcome.TIME_LIMIT:
            result.message = (
                f"reached its share ({share:.3g} s) of the sweep's time limit ({problem.options.time_limit_s:g} s)"
            )
        # The member's own problem keeps the sweep's options (its time limit is the sweep's).
        solutions.append(Solution(member, solution.trial, solution.plan, result))
        done += result.iterations
    return solutions
