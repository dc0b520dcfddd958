"""Helpers for the peers: evaluate the spec's equations and conditions on their tensors, so
every solver solves exactly the same problem with its own derivative machinery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from odeserve.problem import Condition, Problem
from odeserve.solver.residual import run_torch

#: derivs(j, k) -> the k-th derivative of unknown j at the points, shape (N,)
DerivFn = Callable[[int, int], torch.Tensor]


def equation_residuals(problem: Problem, x: torch.Tensor, derivs: DerivFn) -> list[torch.Tensor]:
    env: dict[Any, Any] = {problem.variable: x}
    for j, u in enumerate(problem.unknowns):
        for k in range(problem.orders[u] + 1):
            env[(u, k)] = derivs(j, k)
    return [run_torch(eq.residual, env, x) for eq in problem.equations]


def condition_residual(
    problem: Problem, cond: Condition, at: Callable[[int, int, float], torch.Tensor]
) -> torch.Tensor:
    """``at(j, k, point)`` -> the k-th derivative of unknown j at the point (a scalar tensor)."""
    env = {key: at(problem.unknowns.index(key[0]), key[1], key[2]) for key in cond.residual.keys}
    like = next(iter(env.values()))
    return run_torch(cond.residual, env, like)


def single_point_conditions(problem: Problem) -> bool:
    return all(len({k[2] for k in c.residual.keys}) == 1 for c in problem.conditions)
