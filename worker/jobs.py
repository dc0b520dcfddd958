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
import io
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job

from service.settings import get_settings
from worker import artifacts

log = logging.getLogger("odeserve.job")

#: At most this many progress writes per second (RQ writes only the meta field).
PROGRESS_INTERVAL_S = 0.5
#: How often the cancel and hand-back flags are read.
CANCEL_POLL_S = 0.25
#: How long final writes keep retrying while Redis is unreachable.
WRITE_RETRY_S = 120.0
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


class HandedBack(Exception):
    """Raised to give a job back to the queue (worker shutdown); RQ's retry requeues it and the
    next worker resumes from its checkpoint."""


def choose_device(setting: str) -> str:
    import torch

    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


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


def _tolerant(fn: Callable[[], Any]) -> Any:
    """Best-effort Redis call during training: an outage must not kill the job."""
    try:
        return fn()
    except REDIS_ERRORS as exc:
        log.warning("redis unavailable during training: %s", exc)
        return None


def _persistent(fn: Callable[[], Any]) -> Any:
    """A write that must happen (results): retry until Redis is back, within WRITE_RETRY_S."""
    deadline = time.monotonic() + WRITE_RETRY_S
    delay = 0.5
    while True:
        try:
            return fn()
        except REDIS_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _load_checkpoint(redis, job_id: str) -> dict[str, Any] | None:
    import torch

    data = _tolerant(lambda: artifacts.get(redis, job_id, artifacts.CHECKPOINT))
    if not data:
        return None
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means starting over, not failing
        log.warning("ignoring an unreadable checkpoint: %s", exc)
        return None


def solve_job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from odeserve.problem import load_problem
    from odeserve.solver.solve import solve

    die_with_parent()
    settings = get_settings()
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    job = get_current_job()
    assert job is not None, "solve_job runs inside an RQ job"
    redis = job.connection
    problem = load_problem(spec)
    opts = problem.options
    device = choose_device(settings.device)
    ttl, cap = settings.result_ttl_s, settings.max_artifact_bytes
    last_write = 0.0
    last_poll = 0.0
    stop_reason: list[str] = []

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
        _tolerant(job.save_meta)

    def should_stop() -> bool:
        nonlocal last_poll
        now = time.monotonic()
        if now - last_poll < CANCEL_POLL_S:
            return False
        last_poll = now
        if _tolerant(lambda: artifacts.cancel_requested(redis, job.id)):
            stop_reason.append("cancel")
        elif _tolerant(lambda: artifacts.handback_requested(redis, job.id)):
            stop_reason.append("handback")
        return bool(stop_reason)

    def save_checkpoint(state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        _tolerant(lambda: artifacts.put(redis, job.id, artifacts.CHECKPOINT, buf.getvalue(), ttl, cap))

    resume = _load_checkpoint(redis, job.id)
    context = {"request_id": job.meta.get("request_id"), "job_id": job.id, "device": device}
    if resume is not None:
        job.meta["resumed_from"] = int(resume["iteration"])
        _tolerant(job.save_meta)
    log.info("job started", extra=context | {"iterations": int(resume["iteration"]) if resume else 0})
    solution = solve(
        problem,
        device=device,
        progress=progress,
        should_stop=should_stop,
        checkpoint=save_checkpoint,
        checkpoint_every_s=settings.checkpoint_s,
        resume=resume,
    )
    r = solution.result
    if stop_reason and stop_reason[0] == "handback":
        _persistent(lambda: save_checkpoint(r.state or {}))
        _persistent(lambda: artifacts.clear_handback(redis, job.id))
        log.info("job handed back", extra=context | {"iterations": r.iterations})
        raise HandedBack(f"handed back at iteration {r.iterations} (worker shutting down); it resumes elsewhere")

    metrics = solution.metrics()
    samples, history = solution.samples(), solution.history()
    ts_bytes, pt2_bytes = solution.torchscript_bytes(), solution.export_bytes()
    stored = _persistent(
        lambda: {
            "samples": artifacts.put_json(redis, job.id, artifacts.SAMPLES, samples, ttl, cap),
            "history": artifacts.put_json(redis, job.id, artifacts.HISTORY, history, ttl, cap),
            "torchscript": artifacts.put(redis, job.id, artifacts.TORCHSCRIPT, ts_bytes, ttl, cap),
            "export": artifacts.put(redis, job.id, artifacts.EXPORT, pt2_bytes, ttl, cap),
        }
    )
    _persistent(lambda: artifacts.record_outcome(redis, solution.outcome.value, r.elapsed))
    _tolerant(lambda: artifacts.delete(redis, job.id, artifacts.CHECKPOINT))
    done = {"outcome": solution.outcome.value, "iterations": r.iterations, "duration_ms": round(r.elapsed * 1e3, 1)}
    log.info("job finished", extra=context | done)
    job.meta["progress"] = {
        "iteration": r.iterations,
        "max_iterations": opts.max_iterations,
        "loss": r.loss,
        "elapsed_s": r.elapsed,
        "eta_s": 0.0,
    }
    _persistent(job.save_meta)
    return {
        "outcome": solution.outcome.value,
        "message": solution.message,
        "metrics": metrics,
        "device": device,
        "stored": stored,
    }
