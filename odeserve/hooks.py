"""How a caller watches and steers training: one small object instead of loose callbacks.

``solve(problem, hooks=Hooks(on_step=print, should_stop=flag.is_set))``. Every field is optional.
The service's worker supplies a Redis-backed set (progress reports, cancel and hand-back flags,
checkpoints); the CLI a progress bar; benchmarks an error tracker. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from torch import Tensor

Phase = Literal["adam", "lm", "lbfgs"]


@dataclass(frozen=True)
class Step:
    """One training iteration, as the hooks see it."""

    iteration: int  # 1-based, counted over all phases
    loss: float  # mean squared scaled residual
    elapsed: float  # seconds of training so far
    phase: Phase
    theta: Tensor  # the current weights (detached; evaluate with Trial.derivatives)


class TrainState(TypedDict, total=False):
    """Where training stopped: enough to continue exactly there (``solve(resume=state)``).

    Tensors and plain values only, so ``torch.save`` / ``torch.load(weights_only=True)`` round-trip it.
    """

    phase: Phase
    iteration: int
    elapsed: float
    best_loss: float
    best_theta: Tensor | None
    history: Tensor  # (n, 3): iteration, loss, elapsed
    theta: Tensor
    adam: dict[str, Any]  # Adam's moments, step count and learning rate (odeserve.solver.adam)
    sched: dict[str, Any]  # checkpoints written before that: torch.optim's learning-rate schedule
    mu: float  # Levenberg-Marquardt damping
    nu: float
    stalled: int  # Levenberg-Marquardt passes without real progress
    retaken: bool  # its Jacobian retaken where the output layer moved, since the last accepted step
    lbfgs: dict[str, Any]  # torch.optim.LBFGS state (its curvature history)
    plateau_loss: float  # the plateau rule: best loss at the start of the current window
    plateau_since: int  # and the iteration that window started


@dataclass(frozen=True)
class Hooks:
    """Callbacks into a training run.

    Attributes:
        on_step: called after every iteration with a :class:`Step`.
        should_stop: polled after every iteration; True cancels the run, which keeps the best
            weights found so far and ends with the outcome ``canceled``.
        checkpoint: called every ``checkpoint_every_s`` seconds with a :class:`TrainState`.
        checkpoint_every_s: the interval between checkpoints, seconds.
    """

    on_step: Callable[[Step], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint: Callable[[TrainState], None] | None = None
    checkpoint_every_s: float = 5.0


__all__ = ["Hooks", "Phase", "Step", "TrainState"]
