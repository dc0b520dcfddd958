"""The orchestrator: problem -> trial function -> training -> solution."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from odeserve.hooks import Hooks, TrainState
from odeserve.network import layer_sizes, parameter_count
from odeserve.problem import Problem, load_problem
from odeserve.solver.constraints import ConstraintPlan, plan_constraints
from odeserve.solver.inverse import DataRows, ParameterMap, collocation_with_data
from odeserve.solver.residual import Residual
from odeserve.solver.solution import Solution
from odeserve.solver.train import STALL_LOSS, train
from odeserve.solver.trial import Trial
from odeserve.solver.uncertainty import dense_points, parameter_statistics
from odeserve.spec import ProblemSpec

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def output_scales(problem: Problem) -> np.ndarray:
    """Per unknown, the magnitude its conditions suggest (at least 1): y(0) = 100 gives 100."""
    scales = np.ones(len(problem.unknowns))
    for c in problem.conditions:
        if c.linear is None:
            continue
        names = {k.unknown for k in c.linear.coeffs}
        if len(names) == 1:
            (name,) = names
            j = problem.unknowns.index(name)
            coef = max(abs(v) for v in c.linear.coeffs.values())
            scales[j] = max(scales[j], abs(c.linear.constant) / coef)
    return scales


def chebyshev_points(a: float, b: float, n: int) -> np.ndarray:
    """Chebyshev-Lobatto points: denser near the ends, where PINN errors usually start."""
    k = np.arange(n)
    return 0.5 * (a + b) - 0.5 * (b - a) * np.cos(np.pi * k / (n - 1))


def initial_theta(sizes: list[int], seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Glorot-normal weights and zero biases, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        std = math.sqrt(2.0 / (n_in + n_out))
        parts.append(torch.randn(n_out * n_in, generator=gen, dtype=torch.float64) * std)
        parts.append(torch.zeros(n_out, dtype=torch.float64))
    theta = torch.cat(parts).to(dtype)
    assert theta.numel() == parameter_count(sizes), "one layout for the weights"
    return theta


def build_trial(problem: Problem, device: torch.device, dtype: torch.dtype) -> tuple[Trial, ConstraintPlan, np.ndarray]:
    """The untrained trial function (initial weights from the seed), its constraint plan and
    output scales."""
    net = problem.options.network
    sizes = layer_sizes(net, 1, len(problem.unknowns))
    scales = output_scales(problem)
    plan = plan_constraints(problem)
    theta0 = initial_theta(sizes, problem.options.seed, dtype)
    trial = Trial(sizes, net.activation, problem.domain, scales, plan, theta0).to(device)
    return trial, plan, scales


def solve(
    problem: Problem | ProblemSpec | Mapping[str, Any] | str,
    *,
    device: str | torch.device | None = None,
    hooks: Hooks | None = None,
    resume: TrainState | None = None,
) -> Solution:
    """Solve an ODE problem with a physics-informed network.

    Args:
        problem: a spec (dict, JSON text or model) or an analysed :class:`Problem`.
        device: torch device; CPU when not given.
        hooks: callbacks that watch every step, may cancel the run and receive checkpoints
            (:class:`odeserve.Hooks`).
        resume: a :class:`TrainState` (from a checkpoint, or ``solution.result.state``) to
            continue from, for the same problem; the continued run ends exactly where an
            uninterrupted one would.

    Returns:
        A :class:`Solution`; its ``outcome`` says how training ended (never an exception for
        a numerical outcome). Invalid problems raise :class:`odeserve.SpecError`.
    """
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dtype = DTYPES[problem.options.precision]
    trial, plan, scales = build_trial(problem, dev, dtype)
    points = collocation_with_data(chebyshev_points(*problem.domain, problem.options.points), problem)
    x = torch.as_tensor(points, dtype=dtype, device=dev)
    eq_scales = np.array([scales[min(i, len(scales) - 1)] for i in range(len(problem.equations))])
    params = ParameterMap.of(problem, trial.theta.numel())
    data = DataRows(problem, trial, scales, trial.theta) if problem.is_inverse else None
    residual = Residual(problem, trial, plan, x, eq_scales, params, data)
    theta0 = torch.cat([trial.theta, torch.tensor(params.raw_initial(problem), dtype=dtype, device=dev)])
    stall = STALL_LOSS + (4.0 * data.weight**2 * data.count / (len(points) + data.count) if data else 0.0)
    result = train(residual, theta0, problem.options, hooks=hooks, resume=resume, stall_loss=stall)
    trial.theta.copy_(result.theta[: params.offset])
    if not problem.is_inverse:
        return Solution(problem, trial, plan, result)
    dense = chebyshev_points(*problem.domain, dense_points(problem, params.offset))
    estimates, fit = parameter_statistics(problem, trial, plan, scales, eq_scales, params, result.theta, dense)
    values = params.floats(result.theta)
    return Solution(problem, trial, plan, result, parameter_values=values, estimates=estimates, data_fit=fit)
