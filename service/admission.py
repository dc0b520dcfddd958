"""Admission control on a problem's real cost, beyond the per-field limits (``service.limits``).

A second-order (Levenberg-Marquardt) step builds the residual's ``rows x params`` Jacobian and
a Gram matrix in the smaller dimension ``m = min(rows, params)``. Its memory is about
``bytes * (3 * rows * params + 3 * m^2)`` (the Jacobian with its one-pass intermediates, the
Gram matrix, its damped copy and the Cholesky factor), and four more ``rows x params`` copies
for a linear problem, whose steps eliminate the output layer (``odeserve.solver.projection``:
the projected hidden block of the iterate, and the trial step's Jacobian and projected hidden
block while the iterate's are kept; measured: 1,501 x 4,353 in float64, 391 MiB above an Adam
run against 401 estimated); its work is about ``rows * params * m``
multiply-adds (``odeserve.threads.step_work``). A problem is refused (422 naming
``options.points`` and ``options.network``, and the budget) when that memory does not fit the
job's memory budget (``ODESERVE_JOB_MEMORY_MB`` minus ``ODESERVE_JOB_BASELINE_MB``), or when one
step is estimated (at ``ODESERVE_ASSUMED_GFLOPS`` per core, on the threads the job would get)
to take longer than half of the job's time limit, so that a time limit and a cancel are always
honoured within about one step. Adam and L-BFGS need no Jacobian: only the first rule's
activations part applies to them, and they are far below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import Settings
from odeserve.devices import step_members, sweep_training
from odeserve.errors import LimitError
from odeserve.problem import Problem
from odeserve.threads import jacobian_shape, step_work, threads_for

MIB = 1024 * 1024


@dataclass(frozen=True)
class Cost:
    rows: int
    params: int
    step_bytes: int  # one second-order step's matrices
    step_s: float  # one second-order step's estimated time


def _batch(problem: Problem, settings: Settings) -> int | None:
    """How many members of a sweep one step holds on this server's workers: on a CPU-only server
    (``ODESERVE_DEVICE=cpu``) the CPU's way (``odeserve.devices.sweep_training``: four anchors
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
    copies = 7 if problem.is_linear and problem.options.optimizer == "lm" else 3
    return Cost(rows, params, width * (copies * rows * params + 3 * m * m), step_s)


def admit(problem: Problem, settings: Settings) -> None:
    """Raise LimitError (422 naming the fields and the budget) for a problem whose second-order
    step cannot fit this server's per-job memory or its own time limit."""
    plain_first_order = (
        problem.options.optimizer != "lm" or problem.options.max_iterations <= problem.options.adam_iterations
    )
    # A batched sweep keeps per-row weight copies in every phase, and a shared-basis sweep takes
    # each member's Jacobian for its fit: only members trained one by one need no step.
    if plain_first_order and (not problem.is_sweep or _batch(problem, settings) == 1):
        return
    cost = estimate(problem, settings)
    shape = f"{cost.rows} residual rows x {cost.params} weights"
    if settings.job_memory_mb:
        budget = max(settings.job_memory_mb - settings.job_baseline_mb, 0) * MIB
        if cost.step_bytes > budget:
            # A sweep is sized as one batch of its members unless the workers are CPU-only (above).
            other = "fewer sweep members" if problem.is_sweep else "options.optimizer 'lbfgs'"
            raise LimitError(
                ("options", "points"),
                f"a Levenberg-Marquardt step on {shape} needs about {cost.step_bytes // MIB} MiB; "
                f"this server's memory budget per job is {budget // MIB} MiB: use fewer options.points, "
                f"a smaller options.network, or {other}",
            )
    limit = problem.options.time_limit_s
    if cost.step_s > limit / 2:
        raise LimitError(
            ("options", "time_limit_s"),
            f"one Levenberg-Marquardt step on {shape} is estimated at {cost.step_s:.3g} s, more than "
            f"half of options.time_limit_s ({limit:g} s): raise the time limit, or use fewer "
            "options.points or a smaller options.network",
        )
