"""Job access for the API: enqueue by dotted path, read status and artifacts, cancel.

RQ's statuses are mapped to the API's five, never leaked. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from odeserve.problem import Problem
from service.errors import ApiError, not_found
from service.logs import request_id
from service.schemas import Job, JobErrorInfo, Links, Progress
from service.settings import Settings
from worker import artifacts
from worker.queueing import JOB_FUNCTION


def new_job_id() -> str:
    """Unguessable: 128 random bits."""
    return secrets.token_urlsafe(16)


#: Idempotency keys: at most this long, printable ASCII.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


@dataclass(frozen=True)
class Reservation:
    key: str  # the Redis key holding it
    job_id: str
    new: bool  # False: the same key and body were submitted before; job_id is that job


def reserve_idempotency(queue: Queue, key: str, problem: Problem, settings: Settings, owner: str) -> Reservation:
    """Reserve an ``Idempotency-Key`` (per owner): the same key and body give the same job; the
    same key with another body is a 422. The reservation is atomic (SET NX) and made before the
    job is enqueued, so concurrent retries cannot create two jobs."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422, "Invalid header", "Idempotency-Key must be 1-200 printable ASCII characters", "Idempotency-Key"
        )
    redis_key = f"odeserve:idempotency:{owner}:" + hashlib.sha256(key.encode()).hexdigest()
    job_id = new_job_id()
    record = json.dumps({"job_id": job_id, "spec_hash": problem.spec_hash})
    if queue.connection.set(redis_key, record, nx=True, ex=settings.result_ttl_s):
        return Reservation(redis_key, job_id, True)
    existing = json.loads(queue.connection.get(redis_key) or "{}")
    if existing.get("spec_hash") != problem.spec_hash:
        raise ApiError(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different problem; use a new key",
            "Idempotency-Key",
        )
    return Reservation(redis_key, existing["job_id"], False)


def release_idempotency(queue: Queue, reservation: Reservation) -> None:
    with contextlib.suppress(Exception):
        queue.connection.delete(reservation.key)


def enqueue(
    queue: Queue, problem: Problem, settings: Settings, job_id: str | None = None, owner: str = "anonymous"
) -> RQJob:
    spec = problem.spec.model_dump(mode="json")
    opts = problem.options
    return queue.enqueue(
        JOB_FUNCTION,
        spec,
        job_id=job_id or new_job_id(),
        # A job abandoned by a dead worker, or handed back on shutdown, is requeued and resumes
        # from its checkpoint; after max_retries it fails with worker_died.
        retry=Retry(max=settings.max_retries) if settings.max_retries else None,
        job_timeout=int(opts.time_limit_s) + settings.job_timeout_margin_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        ttl=settings.result_ttl_s,
        meta={
            "progress": {"iteration": 0, "max_iterations": opts.max_iterations, "elapsed_s": 0.0},
            "time_limit_s": opts.time_limit_s,
            "owner": owner,
            "request_id": request_id.get(),
        },
    )


#: The shape of ids this service hands out (RQ itself rejects anything else with ValueError).
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def fetch(queue: Queue, job_id: str) -> RQJob:
    if not _JOB_ID.fullmatch(job_id):
        raise not_found(job_id)
    try:
        return RQJob.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        raise not_found(job_id) from None


def live_workers(queue: Queue, settings: Settings) -> int:
    """Workers of this queue whose last heartbeat is fresh (a killed worker's registration
    outlives it by up to its TTL)."""
    now = datetime.now(UTC)
    count = 0
    for w in Worker.all(queue=queue):
        beat = w.last_heartbeat
        if beat is not None and (now - _utc(beat)).total_seconds() < settings.worker_silence_s:
            count += 1
    return count


def reap_abandoned(queue: Queue) -> None:
    """Settle jobs whose worker died (heartbeat expired): requeued while retries are left (they
    resume from their checkpoint), else failed; none stays 'running' forever.

    Workers run the same cleanup on their maintenance cycle; the API runs it on reads too, so
    a job is settled even when its only worker is gone.
    """
    StartedJobRegistry(queue=queue).cleanup()


def _result(job: RQJob) -> dict[str, Any] | None:
    value = job.return_value(refresh=False) if job.get_status(refresh=False) == RQStatus.FINISHED else None
    return value if isinstance(value, dict) else None


def _utc(dt: Any) -> Any:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _failure(job: RQJob) -> JobErrorInfo:
    info = ""
    try:
        latest = job.latest_result()
        info = (latest.exc_string if latest is not None else "") or ""
    except Exception:  # noqa: BLE001 - a missing result must not break status reads
        info = ""
    last = info.strip().splitlines()[-1] if info.strip() else ""
    if "AbandonedJobError" in info or "terminated unexpectedly" in info or "Work-horse" in info or not info:
        return JobErrorInfo(
            type="worker_died", detail="the worker running this job died (killed or crashed); submit it again"
        )
    if "JobTimeoutException" in info:
        return JobErrorInfo(type="timeout", detail="the job ran past its time limit plus margin and was stopped")
    return JobErrorInfo(type="error", detail=last[:500] or "the job failed")


def describe(job: RQJob, base_url: str = "") -> Job:
    status = job.get_status(refresh=False)
    meta = job.meta or {}
    p = meta.get("progress") or {}
    progress = Progress(
        iteration=int(p.get("iteration", 0)),
        max_iterations=int(p.get("max_iterations", 0)),
        loss=p.get("loss"),
        elapsed_s=float(p.get("elapsed_s", 0.0)),
        eta_s=p.get("eta_s"),
    )
    result = _result(job)
    api_status: str
    error = None
    if status == RQStatus.FINISHED:
        outcome = (result or {}).get("outcome")
        if outcome == "canceled":
            api_status = "canceled"
        elif outcome == "diverged":
            api_status = "failed"
            error = JobErrorInfo(type="diverged", detail=(result or {}).get("message", "training diverged"))
        else:
            api_status = "succeeded"
    elif status == RQStatus.STARTED:
        api_status = "running"
    elif status in (RQStatus.FAILED,):
        api_status = "failed"
        error = _failure(job)
    elif status in (RQStatus.CANCELED, RQStatus.STOPPED):
        api_status = "canceled"
    else:  # queued, deferred, scheduled, created
        api_status = "queued"
    link = f"{base_url}/jobs/{job.id}"
    return Job(
        id=job.id,
        status=api_status,  # type: ignore[arg-type]
        created_at=_utc(job.created_at),
        started_at=_utc(job.started_at),
        finished_at=_utc(job.ended_at),
        progress=progress,
        outcome=(result or {}).get("outcome"),
        message=(result or {}).get("message"),
        metrics=(result or {}).get("metrics"),
        error=error,
        links=Links(self=link, solution=f"{link}/solution", model=f"{link}/model"),
    )


def cancel(queue: Queue, job: RQJob, settings: Settings) -> None:
    """Queued: canceled at once. Running: a flag the training loop checks (within ~1 s), so it
    ends 'canceled' and keeps the best model so far. Finished: 409."""
    status = job.get_status()
    if status in (RQStatus.FINISHED, RQStatus.FAILED, RQStatus.CANCELED, RQStatus.STOPPED):
        raise ApiError(409, "Conflict", f"job {job.id} has already ended; nothing to cancel")
    artifacts.request_cancel(queue.connection, job.id, settings.result_ttl_s)
    if status != RQStatus.STARTED:
        # If it started meanwhile, cancel() refuses and the flag stops it instead.
        with contextlib.suppress(Exception):
            job.cancel()
    # Between reading the status and canceling, the job may have started; the flag covers it.


def artifact(queue: Queue, job: RQJob, name: str) -> bytes:
    data = artifacts.get(queue.connection, job.id, name)
    if data is None:
        d = describe(job)
        if d.status in ("queued", "running"):
            raise ApiError(409, "Conflict", f"job {job.id} is {d.status}; its results are not ready")
        raise ApiError(409, "Conflict", f"job {job.id} ended {d.status} and has no such result")
    return data


def solution(queue: Queue, job: RQJob) -> dict[str, Any]:
    return json.loads(artifact(queue, job, artifacts.SAMPLES))
