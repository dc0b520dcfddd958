"""The orchestrator: problem -> trial function -> training -> solution."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from odeserve.errors import SpecError
from odeserve.estimate.reference import Probe, classical_reference
from odeserve.estimate.system import NotApplicable
from odeserve.hooks import Hooks, TrainState
from odeserve.network import layer_sizes, output_layer, parameter_count
from odeserve.parametric import chebyshev_points, collocation_rows, domain_points, training_grid
from odeserve.problem import Problem, load_problem
from odeserve.solver.constraints import ConstraintPlan, plan_constraints
from odeserve.solver.escalate import solve_escalating
from odeserve.solver.inverse import DataRows, ParameterMap, collocation_with_data
from odeserve.solver.marching import FitResidual, Offsets, march, warm_fit
from odeserve.solver.residual import Residual
from odeserve.solver.ridge import Ridged
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


def equation_scales(problem: Problem, scales: np.ndarray) -> np.ndarray:
    """Each equation's residual scale: the output scale of the unknown of the same index."""
    return np.array([scales[min(i, len(scales) - 1)] for i in range(len(problem.equations))])


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
    sizes = layer_sizes(net, 1 + len(problem.ranges), len(problem.unknowns))
    scales = output_scales(problem)
    plan = plan_constraints(problem)
    theta0 = initial_theta(sizes, problem.options.seed, dtype)
    trial = Trial(sizes, net.activation, problem.domain, scales, plan, theta0, list(problem.ranges.values()))
    return trial.to(device), plan, scales


def refined_points(solution: Solution, n: int) -> np.ndarray:
    """Residual-based refinement: the n points of a fine grid where ``solution``'s scaled residual
    is largest."""
    grid = np.linspace(*solution.problem.domain, 8 * n + 1)
    with np.errstate(all="ignore"):
        size = np.nan_to_num(np.max(np.abs(solution.residuals(grid)), axis=1), nan=np.inf)
    return np.sort(grid[np.argsort(size)[-n:]])


def _classical_values(problem: Problem, probe: Probe, xs: np.ndarray) -> np.ndarray | None:
    """The classical solution at xs for a warm start, or None where there is none."""
    try:
        return classical_reference(problem, probe, xs).values
    except (NotApplicable, ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None


def train_attempt(
    problem: Problem,
    device: torch.device,
    offsets: Offsets,
    *,
    resume: TrainState | None = None,
    windows: int = 1,
    warm_probe: Probe | None = None,
    refine: Solution | None = None,
    start: Solution | None = None,
    checkpoint: bool = True,
) -> Solution:
    """One training run: optionally a warm start (a fit to the classical solution computed with
    ``warm_probe`` as seed) and time-marching over ``windows``, then training on the whole domain;
    ``refine``: add collocation points where that solution's residual is largest; ``start``: a
    solution of the same architecture whose weights training starts from (instead of the seed's)."""
    dtype = DTYPES[problem.options.precision]
    trial, plan, scales = build_trial(problem, device, dtype)
    if start is not None:
        trial.theta.copy_(start.trial.theta)
    unit = chebyshev_points(0.0, 1.0, domain_points(problem))
    a, b = problem.domain
    xs = a + (b - a) * unit
    if refine is not None:
        xs = np.union1d(xs, refined_points(refine, problem.options.points))
    x = torch.as_tensor(xs, dtype=dtype, device=device)
    eq_scales = equation_scales(problem, scales)
    time_left, before = problem.options.time_limit_s, offsets.elapsed
    warm = False
    if warm_probe is not None and resume is None:
        target = _classical_values(problem, warm_probe, xs)
        if target is not None:
            fit = warm_fit(
                FitResidual(problem, trial, plan, x, scales, target),
                trial.theta,
                problem.options,
                offsets,
                time_left / 3,
            )
            trial.theta.copy_(fit.theta)
            time_left -= fit.elapsed
            warm = True
    if windows > 1 and resume is None:
        stopped = march(Residual, trial, (problem, plan, eq_scales), windows, unit, offsets, time_left / 2)
        time_left = problem.options.time_limit_s - (offsets.elapsed - before)
        if stopped is not None:
            return Solution(problem, trial, plan, stopped, warm_start=warm)
    options = problem.options.model_copy(update={"time_limit_s": max(time_left, 1e-3)})
    residual = _residual(problem, trial, plan, xs, eq_scales)
    result = train(residual, trial.theta, options, hooks=offsets.hooks(checkpoint), resume=resume)
    offsets.advance(result)
    trial.theta.copy_(result.theta)
    return Solution(problem, trial, plan, result, warm_start=warm)


def _residual(
    problem: Problem, trial: Trial, plan: ConstraintPlan, xs: np.ndarray, eq_scales: np.ndarray
) -> Residual | Ridged:
    """The residual on the points ``xs`` and, for a parametric model, every combination of the
    training grid's parameter values with them; a plain linear problem's with the ridge on its
    output layer (:mod:`odeserve.solver.ridge`)."""
    like = trial.theta
    if not problem.is_parametric:
        plain = Residual(problem, trial, plan, torch.as_tensor(xs).to(like), eq_scales)
        return Ridged(plain, output_layer(trial.sizes)) if problem.has_ridge else plain
    grid = training_grid(problem)
    rows, q = collocation_rows(xs, grid)
    as_t = lambda a: torch.as_tensor(a).to(like)  # noqa: E731
    return Residual(problem, trial, plan, as_t(rows), eq_scales, q=as_t(q), grid=as_t(grid))


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
            (:class:`odeserve.Hooks`); across escalation attempts the iterations and seconds
            count on, and checkpoints come from the first attempt only.
        resume: a :class:`TrainState` (from a checkpoint, or ``solution.result.state``) to
            continue from, for the same problem; the continued run ends exactly where an
            uninterrupted one would.

    Returns:
        A :class:`Solution` with its error estimate; when that estimate exceeds
        ``options.tolerance`` and time remains, the best of several attempts
        (:mod:`odeserve.solver.escalate`). Its ``outcome`` says how training ended (never an
        exception for a numerical outcome). Invalid problems raise :class:`odeserve.SpecError`.
    """
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if problem.is_inverse:
        return _solve_inverse(problem, dev, hooks, resume)
    if problem.is_sweep:
        raise SpecError(("sweep",), "a sweep has one solution per member: solve it with odeserve.solve_sweep")

    def attempt(p: Problem, offsets: Offsets, **kwargs: Any) -> Solution:
        return train_attempt(p, dev, offsets, **kwargs)

    return solve_escalating(problem, attempt, hooks, resume)


def _solve_inverse(problem: Problem, dev: torch.device, hooks: Hooks | None, resume: TrainState | None) -> Solution:
    """Data and unknown parameters: weights and parameters trained together, then the
    parameters' statistics and the data fit (odeserve.solver.uncertainty). No escalation: the
    data, not a classical reference, say how good the answer is."""
    dtype = DTYPES[problem.options.precision]
    trial, plan, scales = build_trial(problem, dev, dtype)
    points = collocation_with_data(chebyshev_points(*problem.domain, problem.options.points), problem)
    x = torch.as_tensor(points, dtype=dtype, device=dev)
    eq_scales = equation_scales(problem, scales)
    params = ParameterMap.of(problem, trial.theta.numel())
    data = DataRows(problem, trial, scales, trial.theta)
    residual = Residual(problem, trial, plan, x, eq_scales, params, data)
    theta0 = torch.cat([trial.theta, torch.tensor(params.raw_initial(problem), dtype=dtype, device=dev)])
    # Noisy data cannot be fitted exactly: a chi-square up to 4 per point raises the stall floor.
    stall = STALL_LOSS + 4.0 * data.weight**2 * data.count / (len(points) + data.count)
    result = train(residual, theta0, problem.options, hooks=hooks, resume=resume, stall_loss=stall)
    trial.theta.copy_(result.theta[: params.offset])
    dense = chebyshev_points(*problem.domain, dense_points(problem, params.offset))
    estimates, fit = parameter_statistics(problem, trial, plan, data, eq_scales, params, result.theta, dense)
    values = params.floats(result.theta)
    return Solution(problem, trial, plan, result, parameter_values=values, estimates=estimates, data_fit=fit)
