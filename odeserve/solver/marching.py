"""Training helpers of the escalation: time-marching windows and a warm start.

Time-marching trains the one network on windows that grow from the initial point (the first
1/K of the domain, then 2/K, ...), each window starting from the weights of the last: the network
never fits the future before the past, so long horizons, oscillations and transients are not
flattened into an equilibrium; continuity between windows is automatic (one network). The last
window is the whole domain, trained as usual.

A warm start first fits the network to values of a classical solution at the collocation points
(least squares, Levenberg-Marquardt), then physics training starts from those weights.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from odeserve.hooks import Hooks, Step
from odeserve.network import output_layer
from odeserve.outcome import Outcome
from odeserve.problem import Problem
from odeserve.solver.constraints import ConstraintPlan
from odeserve.solver.residual import Residual
from odeserve.solver.train import TrainResult, train
from odeserve.solver.trial import Trial
from odeserve.spec import Options

#: Iterations of each window before the last (Levenberg-Marquardt mostly converges in far fewer).
WINDOW_ITERATIONS = 300


class FitResidual(Residual):
    """r(theta) = (network - target) / scale at the collocation points: a data fit."""

    def __init__(
        self, problem: Problem, trial: Trial, plan: ConstraintPlan, x: Tensor, scales: np.ndarray, target: np.ndarray
    ) -> None:
        super().__init__(problem, trial, plan, x, scales)
        self.order = 0
        self.phi = trial.basis(x, 0) if trial.has_constraints else None
        self.penalty = []
        self.target = torch.as_tensor(np.asarray(target).T, dtype=x.dtype, device=x.device)  # (m, n)
        self.fit_scales = [float(s) for s in scales]

    @property
    def linear_columns(self) -> slice | None:
        """A fit is affine in the network's output layer, whatever the equations."""
        return output_layer(self.trial.sizes)

    def _equation_rows(self, theta: Tensor, derivs: list[Tensor]) -> list[Tensor]:
        y = derivs[0]
        return [(y[..., j] - self.target[j]) / s for j, s in enumerate(self.fit_scales)]


def initial_point(problem: Problem) -> float | None:
    """The one point all conditions sit at (an initial-value problem), or None."""
    points = {k.point for c in problem.conditions for k in c.keys}
    return points.pop() if len(points) == 1 else None


def window_options(options: Options, first: bool, time_left: float) -> Options:
    return options.model_copy(
        update={
            "adam_iterations": options.adam_iterations if first else 0,
            "max_iterations": (options.adam_iterations if first else 0) + WINDOW_ITERATIONS,
            "time_limit_s": max(time_left, 1e-3),
            "compile": False,
        }
    )


class Offsets:
    """One run of hooks over several trainings: iterations and seconds count on from the last."""

    def __init__(self, hooks: Hooks | None) -> None:
        self.user = hooks or Hooks()
        self.iterations = 0
        self.elapsed = 0.0

    def hooks(self, checkpoint: bool = False) -> Hooks:
        """The user's hooks shifted by what ran before; checkpoints only when asked (a state
        resumes one plain training, not an escalation's later stages)."""
        user, it0, t0 = self.user, self.iterations, self.elapsed
        on_step = None
        if user.on_step is not None:
            report = user.on_step

            def on_step(step: Step) -> None:
                report(replace(step, iteration=step.iteration + it0, elapsed=step.elapsed + t0))

        return Hooks(
            on_step=on_step,
            should_stop=user.should_stop,
            checkpoint=user.checkpoint if checkpoint else None,
            checkpoint_every_s=user.checkpoint_every_s,
        )

    def advance(self, result: TrainResult) -> None:
        self.iterations += result.iterations
        self.elapsed += result.elapsed


def march(
    residual: type[Residual],
    trial: Trial,
    setup: tuple[Problem, ConstraintPlan, np.ndarray],
    windows: int,
    points: np.ndarray,
    offsets: Offsets,
    time_left: float,
) -> TrainResult | None:
    """Train on windows 1/K .. (K-1)/K of the domain grown from the initial point, leaving the
    weights in ``trial.theta``; ``points`` maps [0, 1] onto a window. Returns the last window's
    result when training must stop there (canceled, diverged), else None."""
    problem, plan, scales = setup
    p = initial_point(problem)
    assert p is not None, "time-marching needs an initial point"
    a, b = problem.domain
    spent = 0.0
    for k in range(1, windows):
        lo, hi = p - (p - a) * k / windows, p + (b - p) * k / windows
        x = torch.as_tensor(lo + (hi - lo) * points, dtype=trial.theta.dtype, device=trial.theta.device)
        opts = window_options(problem.options, k == 1, (time_left - spent) / (windows - k + 1))
        result = train(residual(problem, trial, plan, x, scales), trial.theta, opts, hooks=offsets.hooks())
        offsets.advance(result)
        spent += result.elapsed
        trial.theta.copy_(result.theta)
        if result.outcome in (Outcome.CANCELED, Outcome.DIVERGED):
            return result
    return None


def warm_fit(residual: FitResidual, theta: Tensor, options: Options, offsets: Offsets, time_left: float) -> TrainResult:
    """Fit the network to the target values (a few hundred iterations)."""
    opts = options.model_copy(
        update={
            "adam_iterations": 100,
            "max_iterations": 600,
            "target_loss": 1e-24,
            "time_limit_s": max(time_left, 1e-3),
            "compile": False,
        }
    )
    result = train(residual, theta, opts, hooks=offsets.hooks())
    offsets.advance(result)
    return result
