"""The RQ job: solve one problem, report progress, checkpoint, store artifacts. Runs in the
work horse.

Torch is imported here, inside the job process; device choice and torch threads are set per
job, so the worker's parent process never initialises CUDA or autograd.

Nothing lost: the training state is checkpointed to Redis every ``checkpoint_s`` seconds. A
job whose worker died is requeued by RQ's retry (see ``service.jobs.enqueue``) and the next
worker resumes from the checkpoint; a worker asked to stop (SIGTERM) hands its job back the
same way. Short Redis outages during training only skip progress reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rq import get_current_job

from common.keys import Artifact
from common.records import JobResult, Progress
from common.settings import Settings, get_settings
from common.store import ArtifactStore, record_outcome
from odeserve.devices import choose_device, step_members, sweep_training
from odeserve.hooks import TrainState
from odeserve.threads import jacobian_shape, threads_for
from worker.reporter import JobReporter, persistent, tolerant
from worker.sweep_result import sweep_result
from worker.templates import templates_for
from worker.watchdog import Watchdog

if TYPE_CHECKING:
    from odeserve.problem import Problem
    from odeserve.solver.solution import Solution

log = logging.getLogger("odeserve.job")


class HandedBack(Exception):
    """Raised to give a job back to the queue (worker shutdown); RQ's retry requeues it and the
    next worker resumes from its checkpoint."""


def die_with_parent() -> None:
    """Linux: have the kernel kill this work horse if its worker dies. Without it, a horse
    orphaned by a killed worker trains on unwatched while its job, whose heartbeat has expired,
    is requeued elsewhere: the job would run twice."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before the request took effect
        os._exit(1)


class JobMemoryError(Exception):
    """The job ran into its memory cap (``ODESERVE_JOB_MEMORY_MB``): it fails once, alone."""


def cap_memory(megabytes: int) -> None:
    """A hard cap on this work horse's address space (RLIMIT_AS): an allocation beyond it fails
    in this process (MemoryError), instead of the host's OOM killer choosing a victim. CPU jobs
    only: CUDA maps far more address space than it uses, so a GPU job is bounded by admission
    and by the GPU's own out-of-memory error (also reported as ``memory_limit``)."""
    if megabytes <= 0:
        return
    import resource

    limit = megabytes * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "can't allocate memory" in text or "out of memory" in text or "cannot allocate memory" in text


def _train(
    problem: Problem,
    device: str,
    reporter: JobReporter,
    settings: Settings,
    resume: TrainState | None,
    canceled: Callable[[], bool | None],
) -> Solution | list[Solution]:
    """Train (a sweep: every member) under the watchdog (time limit and cancel within seconds, compile included) and the
    memory cap (an allocation past it is a JobMemoryError: the job fails once, alone)."""
    from odeserve.hooks import Hooks
    from odeserve.solver.solve import solve

    watchdog = Watchdog(problem.options.time_limit_s, canceled)
    try:
        with watchdog:
            if problem.is_sweep:  # no checkpoints: a handed-back sweep starts again
                from odeserve import solve_sweep

                hooks = Hooks(on_step=reporter.on_step, should_stop=reporter.should_stop)
                return solve_sweep(problem, device=device, hooks=hooks)
            return solve(problem, device=device, hooks=reporter.hooks(settings.checkpoint_s), resume=resume)
    except Exception as exc:
        stopped = watchdog.stopped()
        if stopped is not None:  # torch may wrap or rewrite it (dynamo): report the watchdog's reason as it was
            raise stopped from None
        if not isinstance(exc, (MemoryError, RuntimeError)):
            raise
        if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
            raise
        where = (
            f"this server's cap of {settings.job_memory_mb} MiB (ODESERVE_JOB_MEMORY_MB)"
            if device == "cpu"
            else f"the memory of the {device} device"
        )
        raise JobMemoryError(
            f"the job needed more memory than {where}; use fewer points or a smaller network"
        ) from None


def _log_context(reporter: JobReporter, device: str) -> dict[str, object]:
    """What every log line of this job carries (the request id follows it from the API)."""
    import torch

    return {
        "request_id": reporter.meta.request_id,
        "job_id": reporter.job.id,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def solve_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Solve ``spec`` (a ProblemSpec as JSON), store samples, history and models, return a
    :class:`JobResult` as a dict."""
    import torch

    from odeserve.problem import load_problem

    die_with_parent()
    settings = get_settings()
    job = get_current_job()
    if job is None:
        raise RuntimeError("solve_job runs inside an RQ job")
    problem = load_problem(spec)
    device = choose_device(settings.device)
    # A sweep sizes its threads to the members that one step holds (one, on a CPU, trained one by one).
    shape = jacobian_shape(problem, step_members(problem, sweep_training(problem, device)))
    torch.set_num_threads(settings.torch_threads or threads_for(*shape))
    opts = problem.options
    cap_memory(settings.job_memory_mb if device == "cpu" else 0)  # CUDA reserves vast address space
    store = ArtifactStore.from_settings(job.connection, settings)
    reporter = JobReporter(job, store, opts.max_iterations, opts.time_limit_s)
    resume = reporter.load_checkpoint()
    context = _log_context(reporter, device)
    log.info("job started", extra=context | {"iterations": int(resume["iteration"]) if resume else 0})
    canceled = lambda: tolerant(lambda: store.flagged(job.id, Artifact.CANCEL))  # noqa: E731
    started = time.perf_counter()
    trained = _train(problem, device, reporter, settings, resume, canceled)
    # A sweep reports its longest member's iterations, its worst loss and the whole sweep's
    # seconds (its members may have trained one after another).
    solution = (
        max(trained, key=lambda s: (s.result.iterations, s.result.loss)) if isinstance(trained, list) else trained
    )
    r = solution.result
    elapsed = time.perf_counter() - started if isinstance(trained, list) else r.elapsed
    if reporter.stop_reason == "handback":
        if not isinstance(trained, list):  # a handed-back sweep starts again: nothing to resume
            persistent(lambda: reporter.checkpoint(r.state or {}))
        persistent(lambda: store.delete(job.id, Artifact.HANDBACK))
        log.info("job handed back", extra=context | {"iterations": r.iterations})
        raise HandedBack(f"handed back at iteration {r.iterations} (worker shutting down); it resumes elsewhere")
    if isinstance(trained, list):
        result = sweep_result(problem, trained, device, lambda i, s: store_solution(store, job.id, s, settings, i))
    else:
        store_solution(store, job.id, solution, settings)
        result = JobResult(
            outcome=solution.outcome, message=solution.message, metrics=solution.metrics(), device=device
        )
    persistent(lambda: record_outcome(job.connection, result.outcome.value, elapsed))
    tolerant(lambda: store.delete(job.id, Artifact.CHECKPOINT))
    done = {"outcome": result.outcome.value, "iterations": r.iterations, "duration_ms": round(elapsed * 1e3, 1)}
    log.info("job finished", extra=context | done)
    final = Progress(
        iteration=r.iterations, max_iterations=opts.max_iterations, loss=r.loss, elapsed_s=elapsed, eta_s=0.0
    )
    reporter.write_progress(final, must=True)
    return result.model_dump(mode="json")


def store_solution(
    store: ArtifactStore, job_id: str, solution: Solution, settings: Settings, member: int | None = None
) -> None:
    """Store a solution's samples, history and models (a sweep member's under its index)."""
    samples, history = solution.samples(), solution.history()
    exported = solution.export_bytes(templates_for(settings))
    models = {Artifact.TORCHSCRIPT: solution.torchscript_bytes(), Artifact.EXPORT: exported}

    def store_all() -> None:
        stored = [
            store.put_model(job_id, Artifact.SAMPLES, samples, member),
            store.put_model(job_id, Artifact.HISTORY, history, member),
        ]
        stored += [store.put(job_id, name, data, member) for name, data in models.items()]
        if not all(stored):
            log.warning("an artifact was over ODESERVE_MAX_ARTIFACT_BYTES and was not stored", extra={"job_id": job_id})

    persistent(store_all)
