"""Admission control on a problem's real cost, beyond the per-field limits (``service.limits``).

A second-order (Levenberg-Marquardt) step builds the residual's ``rows x params`` Jacobian and
a Gram matrix in the smaller dimension ``m = min(rows, params)``. Its memory is about
``bytes * (3 * rows * params + 3 * m^2)`` (the Jacobian with its one-pass intermediates, the
Gram matrix, its damped copy and the Cholesky factor), and four more ``rows x params`` copies
for a linear problem (unless ``options.variable_projection`` is off) or a warm start's fit,
whose steps eliminate the output layer (``odeserve.solver.projection``:
the projected hidden block of the iterate, and the trial step's Jacobian and projected hidden
block while the iterate's are kept; measured: 1,501 x 4,353 in float64, 391 MiB above an Adam
run against 401 estimated); its work is about ``rows * params * m``
multiply-adds (``odeserve.threads.step_work``). A problem is refused (422 naming
``options.points`` and ``options.network``, and the budget) when that memory does not fit the
job's memory budget (``ODESERVE_JOB_MEMORY_MB`` minus ``ODESERVE_JOB_BASELINE_MB``), or when one
step is estimated (at ``ODESERVE_ASSUMED_GFLOPS`` per core, on the threads the job would get)
to take longer than half of the job's time limit, so that a time limit and a cancel are always
honoured within about one step. Adam and L-BFGS need no Jacobian: only the first rule's
activations part applies to them, and they are far below it. A sweep also holds every member's
weights until it ends, ``MEMBER_COPIES`` times each (below), whatever its optimizer: those count
against the same memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import Settings
from odeserve.devices import step_members, sweep_training
from odeserve.errors import LimitError
from odeserve.problem import Problem
from odeserve.threads import jacobian_shape, step_work, threads_for

MIB = 1024 * 1024
#: A sweep's copies of each member's weights until it ends: its trial's, its trained ones (a fit
#: or its own run), its solution's, and a batch's best (``odeserve.solver.sweep``). A
#: shared-basis sweep keeps three; four counts every way of training.
MEMBER_COPIES = 4


@dataclass(frozen=True)
class Cost:
    rows: int
    params: int
    step_bytes: int  # one second-order step's matrices
    step_s: float  # one second-order step's estimated time
    members_bytes: int = 0  # a sweep's copies of its members' weights (MEMBER_COPIES each)


def _batch(problem: Problem, settings: Settings) -> int | None:
    """How many members of a sweep one step holds on this server's workers: on a CPU-only server
    (``ODESERVE_DEVICE=cpu``) the CPU's way (``odeserve.devices.sweep_training``: three anchors
    of a linear sweep, else one member); otherwise, None, every member (a GPU worker's batch:
    the API cannot tell whether a worker has a GPU)."""
    if not problem.is_sweep or settings.device != "cpu":
        return None
    return step_members(problem, sweep_training(problem, "cpu"))


def estimate(problem: Problem, settings: Settings) -> Cost:
    """The memory and time of one second-order step of ``problem`` on this server."""
    rows, params = jacobian_shape(problem, _batch(problem, settings))
    width = 4 if problem.options.precision == "float32" else 8
    m = min(rows, params)
    threads = settings.torch_threads or threads_for(rows, params)
    step_s = step_work(rows, params) / (settings.assumed_gflops * 1e9 * threads)
    # A warm start's fit to the classical solution solves its output layer exactly whatever the
    # problem (odeserve.solver.marching.FitResidual), on no more rows than the physics has.
    projected = problem.projects or problem.options.warm_start
    copies = 7 if projected and problem.options.optimizer == "lm" else 3
    members = width * MEMBER_COPIES * len(problem.sweep) * jacobian_shape(problem, 1)[1] if problem.is_sweep else 0
    return Cost(rows, params, width * (copies * rows * params + 3 * m * m), step_s, members)


def _needs_step(problem: Problem, settings: Settings) -> bool:
    """Whether the job takes a second-order step, or, for a batched or shared-basis sweep, holds
    per-row weight copies in every phase or takes each member's Jacobian for its fit (members
    trained one by one with Adam only take neither)."""
    options = problem.options
    second_order = options.optimizer == "lm" and options.max_iterations > options.adam_iterations
    return second_order or (problem.is_sweep and _batch(problem, settings) != 1)


def _step(cost: Cost, article: str = "a") -> str:
    return f"{article} Levenberg-Marquardt step on {cost.rows} residual rows x {cost.params} weights"


def _memory(cost: Cost, step: bool, problem: Problem) -> str:
    """What the job's memory goes to, in words."""
    parts = [f"{_step(cost)} needs about {cost.step_bytes // MIB} MiB"] if step else []
    if cost.members_bytes:
        parts.append(f"the {len(problem.sweep)} members' weights about {cost.members_bytes // MIB} MiB")
    return " and ".join(parts)


def admit(problem: Problem, settings: Settings) -> None:
    """Raise LimitError (422 naming the fields and the budget) for a problem whose second-order
    step, with a sweep's members' weights, cannot fit this server's per-job memory, or whose step
    cannot fit its own time limit."""
    step = _needs_step(problem, settings)
    if not step and not problem.is_sweep:
        return
    cost = estimate(problem, settings)
    if settings.job_memory_mb:
        budget = max(settings.job_memory_mb - settings.job_baseline_mb, 0) * MIB
        if (cost.step_bytes if step else 0) + cost.members_bytes > budget:
            # A sweep is sized as one batch of its members unless the workers are CPU-only (_batch).
            other = "fewer sweep members" if problem.is_sweep else "options.optimizer 'lbfgs'"
            # The step alone over the budget: fewer points or a smaller network; else the members.
            alone = step and cost.step_bytes > budget
            raise LimitError(
                ("options", "points") if alone else ("sweep",),
                f"{_memory(cost, step, problem)}; this server's memory budget per job is {budget // MIB} MiB: "
                f"use fewer options.points, a smaller options.network, or {other}",
            )
    limit = problem.options.time_limit_s
    if step and cost.step_s > limit / 2:
        raise LimitError(
            ("options", "time_limit_s"),
            f"{_step(cost, 'one')} is estimated at {cost.step_s:.3g} s, more than half of "
            f"options.time_limit_s ({limit:g} s): raise the time limit, or use fewer options.points or a smaller "
            "options.network",
        )
