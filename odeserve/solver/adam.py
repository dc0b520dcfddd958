"""Adam with a cosine learning-rate schedule on one weight tensor, without ``torch.optim``.

``torch.optim``'s optimizers import ``torch._dynamo`` when first used (their methods are wrapped to
keep dynamo out): 0.5-1 s of a fresh process's first solve (0.5 s of 4.8 s for a default solve on
the project's 2-core machine). The weights here are one tensor (a sweep: one row per member), so
Adam is a handful of tensor operations.

The arithmetic is ``torch.optim.Adam``'s single-tensor path and ``CosineAnnealingLR``'s recursive
schedule, operation for operation, so the weights are bitwise those of ``torch.optim`` (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: ``torch.optim.Adam``'s defaults.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
#: The schedule ends at this fraction of the initial learning rate.
FINAL_LR_FACTOR = 0.05


class Adam:
    """Adam on ``theta`` (updated in place) with the learning rate annealed from ``lr`` to
    ``FINAL_LR_FACTOR * lr`` over ``steps`` steps along a half cosine."""

    def __init__(self, theta: Tensor, lr: float, steps: int) -> None:
        self.base_lr = lr
        self.lr = lr
        self.t_max = max(steps, 1)
        self.eta_min = lr * FINAL_LR_FACTOR
        self.steps_taken = 0
        self.exp_avg = torch.zeros_like(theta)
        self.exp_avg_sq = torch.zeros_like(theta)

    @torch.no_grad()
    def step(self, theta: Tensor, grad: Tensor) -> None:
        """One Adam step on ``theta`` with ``grad``, then one step of the schedule."""
        self.steps_taken += 1
        self.exp_avg.lerp_(grad, 1 - BETA1)
        self.exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        step = float(self.steps_taken)
        step_size = self.lr / (1 - BETA1**step)
        denom = (self.exp_avg_sq.sqrt() / (1 - BETA2**step) ** 0.5).add_(EPS)
        theta.addcdiv_(self.exp_avg, denom, value=-step_size)
        self.lr = self._next_lr(self.steps_taken)

    def _next_lr(self, epoch: int) -> float:
        """``CosineAnnealingLR.get_lr`` at ``epoch`` from the current rate (its recursive form;
        its restart branch, past ``steps``, never comes: no caller steps beyond them)."""
        ratio = (1 + math.cos(math.pi * epoch / self.t_max)) / (1 + math.cos(math.pi * (epoch - 1) / self.t_max))
        return ratio * (self.lr - self.eta_min) + self.eta_min

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values (a checkpoint's ``torch.load(weights_only=True)`` reads it)."""
        return {
            "steps_taken": self.steps_taken,
            "lr": self.lr,
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
        }

    def load_state_dict(self, state: dict[str, Any], sched: dict[str, Any] | None = None) -> None:
        """Continue from :meth:`state_dict`, or from the ``torch.optim.Adam`` and
        ``CosineAnnealingLR`` state dicts that checkpoints held before this class."""
        if "state" in state:  # torch.optim's layout: one parameter, index 0
            moments = state["state"].get(0, {})
            if not moments:  # saved before the first step
                return
            state = {
                "steps_taken": int(moments["step"]),
                "lr": float(sched["_last_lr"][0]) if sched else self.lr,
                "exp_avg": moments["exp_avg"],
                "exp_avg_sq": moments["exp_avg_sq"],
            }
        self.steps_taken = int(state["steps_taken"])
        self.lr = float(state["lr"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
