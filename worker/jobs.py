"""The RQ job: solve one problem, report progress, store artifacts. Runs in the work horse.

Torch is imported here, inside the job process; device choice and torch threads are set per
job, so the worker's parent process never initialises CUDA or autograd.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from rq import get_current_job

from service.settings import get_settings
from worker import artifacts

log = logging.getLogger("odeserve.job")

#: At most this many progress writes per second (RQ writes only the meta field).
PROGRESS_INTERVAL_S = 0.5
#: How often the cancel flag is read.
CANCEL_POLL_S = 0.25


def choose_device(setting: str) -> str:
    import torch

    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def solve_job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from odeserve.problem import load_problem
    from odeserve.solver.solve import solve

    settings = get_settings()
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    job = get_current_job()
    assert job is not None, "solve_job runs inside an RQ job"
    redis = job.connection
    problem = load_problem(spec)
    opts = problem.options
    device = choose_device(settings.device)
    last_write = 0.0
    last_poll = 0.0

    def progress(iteration: int, loss: float, elapsed: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_INTERVAL_S and iteration < opts.max_iterations:
            return
        last_write = now
        rate = elapsed / max(iteration, 1)
        eta = min(rate * (opts.max_iterations - iteration), max(opts.time_limit_s - elapsed, 0.0))
        job.meta["progress"] = {
            "iteration": iteration,
            "max_iterations": opts.max_iterations,
            "loss": loss,
            "elapsed_s": elapsed,
            "eta_s": eta,
        }
        job.meta["device"] = device
        job.save_meta()

    def should_stop() -> bool:
        nonlocal last_poll
        now = time.monotonic()
        if now - last_poll < CANCEL_POLL_S:
            return False
        last_poll = now
        return artifacts.cancel_requested(redis, job.id)

    context = {"request_id": job.meta.get("request_id"), "job_id": job.id, "device": device}
    log.info("job started", extra=context)
    solution = solve(problem, device=device, progress=progress, should_stop=should_stop)
    metrics = solution.metrics()
    ttl, cap = settings.result_ttl_s, settings.max_artifact_bytes
    stored = {
        "samples": artifacts.put_json(redis, job.id, artifacts.SAMPLES, solution.samples(), ttl, cap),
        "history": artifacts.put_json(redis, job.id, artifacts.HISTORY, solution.history(), ttl, cap),
        "torchscript": artifacts.put(redis, job.id, artifacts.TORCHSCRIPT, solution.torchscript_bytes(), ttl, cap),
        "export": artifacts.put(redis, job.id, artifacts.EXPORT, solution.export_bytes(), ttl, cap),
    }
    r = solution.result
    artifacts.record_outcome(redis, solution.outcome.value, r.elapsed)
    done = {"outcome": solution.outcome.value, "iterations": r.iterations, "duration_ms": round(r.elapsed * 1e3, 1)}
    log.info("job finished", extra=context | done)
    job.meta["progress"] = {
        "iteration": r.iterations,
        "max_iterations": opts.max_iterations,
        "loss": r.loss,
        "elapsed_s": r.elapsed,
        "eta_s": 0.0,
    }
    job.save_meta()
    return {
        "outcome": solution.outcome.value,
        "message": solution.message,
        "metrics": metrics,
        "device": device,
        "stored": stored,
    }
