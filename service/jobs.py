"""Job access for the API: enqueue by dotted path, read status and artifacts, cancel.

RQ's statuses are mapped to the API's five, never leaked. Torch-free.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from common.keys import Artifact
from common.logs import request_id
from common.queue import JOB_FUNCTION, FairQueue
from common.records import JobMeta, JobResult, Progress
from common.settings import Settings
from common.store import ArtifactStore
from odeserve.outcome import Outcome
from odeserve.problem import Problem
from service.errors import ApiError, not_found
from service.schemas import Job, JobErrorInfo, JobStatus, Links

#: The shape of ids this service hands out (RQ itself rejects anything else with ValueError).
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENDED = (RQStatus.FINISHED, RQStatus.FAILED, RQStatus.CANCELED, RQStatus.STOPPED)


def new_job_id() -> str:
    """Unguessable: 128 random bits."""
    return secrets.token_urlsafe(16)


def enqueue(queue: Queue, problem: Problem, settings: Settings, job_id: str, owner: str, level: int = 0) -> RQJob:
    """Queue the job in its fair-queue ``level`` (``common.queue``; the reservation's count)."""
    opts = problem.options
    meta = JobMeta(owner=owner, request_id=request_id.get(), progress=Progress(max_iterations=opts.max_iterations))
    target = queue.level(level) if isinstance(queue, FairQueue) else queue
    return target.enqueue(
        JOB_FUNCTION,
        problem.spec.model_dump(mode="json"),
        job_id=job_id,
        # A job abandoned by a dead worker is requeued and resumes from its checkpoint; after
        # max_retries it fails with worker_died. A hand-back on shutdown is requeued without
        # using a retry; any other failure fails once (worker.policy).
        retry=Retry(max=settings.max_retries) if settings.max_retries else None,
        # A sweep's members are estimated, sampled and exported after training: time for each.
        job_timeout=int(opts.time_limit_s) + settings.job_timeout_margin_s + SWEEP_MEMBER_S * len(problem.sweep),
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        ttl=settings.result_ttl_s,
        meta=meta.model_dump(mode="json"),
    )


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
    for q in queue.levels() if isinstance(queue, FairQueue) else [queue]:
        StartedJobRegistry(queue=q).cleanup()


def result_of(job: RQJob) -> JobResult | None:
    if job.get_status(refresh=False) != RQStatus.FINISHED:
        return None
    value = job.return_value(refresh=False)
    return JobResult.model_validate(value) if isinstance(value, dict) else None


def _utc(dt: Any) -> Any:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _failure(job: RQJob) -> JobErrorInfo:
    info = ""
    with contextlib.suppress(Exception):  # a missing result must not break status reads
        latest = job.latest_result()
        info = (latest.exc_string if latest is not None else "") or ""
    last = info.strip().splitlines()[-1] if info.strip() else ""
    if "AbandonedJobError" in info or "terminated unexpectedly" in info or "Work-horse" in info or not info:
        return JobErrorInfo(
            type="worker_died", detail="the worker running this job died (killed or crashed); submit it again"
        )
    for marker, kind in (
        ("JobMemoryError", "memory_limit"),
        ("RefusedJob", "refused"),
        ("TimeLimitOverrun", "timeout"),
    ):
        if marker in info:
            return JobErrorInfo(type=kind, detail=_message_after(info, marker)[:500])
    if "JobTimeoutException" in info:
        return JobErrorInfo(type="timeout", detail="the job ran past its time limit plus margin and was stopped")
    return JobErrorInfo(type="error", detail=last[:500] or "the job failed")


def _message_after(info: str, marker: str) -> str:
    """The message of the last ``...marker: message`` line of a traceback (not the traceback's last line, which
    a library may have appended to)."""
    lines = [line for line in info.splitlines() if f"{marker}: " in line]
    return lines[-1].split(f"{marker}: ", 1)[1].strip() if lines else marker


def _status(job: RQJob, result: JobResult | None) -> tuple[JobStatus, JobErrorInfo | None]:
    """The API's status for an RQ job, and the error of a failed one."""
    status = job.get_status(refresh=False)
    if status == RQStatus.FINISHED:
        if result is not None and result.outcome is Outcome.CANCELED:
            return "canceled", None
        if result is not None and result.outcome is Outcome.DIVERGED:
            return "failed", JobErrorInfo(type="diverged", detail=result.message)
        return "succeeded", None
    if status == RQStatus.STARTED:
        return "running", None
    if status == RQStatus.FAILED:
        return "failed", _failure(job)
    if status in (RQStatus.CANCELED, RQStatus.STOPPED):
        return "canceled", None
    return "queued", None  # queued, deferred, scheduled, created


def describe(job: RQJob) -> Job:
    result = result_of(job)
    status, error = _status(job, result)
    meta = JobMeta.of(job.meta)
    return Job(
        id=job.id,
        status=status,
        created_at=_utc(job.created_at),
        started_at=_utc(job.started_at),
        # A requeued job (hand-back, lost worker) keeps the end of its previous run in RQ's
        # record: a job has finished only once it has ended.
        finished_at=_utc(job.ended_at) if status not in ("queued", "running") else None,
        progress=meta.progress,
        outcome=result.outcome if result else None,
        message=result.message if result else None,
        metrics=result.metrics if result else None,
        members=result.members if result else None,
        device=result.device if result else None,
        resumed_from=meta.resumed_from,
        error=error,
        links=Links.of(job.id),
    )


def cancel(queue: Queue, store: ArtifactStore, job: RQJob) -> None:
    """Queued: canceled at once. Running: a flag the training loop checks (within ~1 s), so it
    ends 'canceled' and keeps the best model so far. Finished: 409."""
    status = job.get_status()
    if status in _ENDED:
        raise ApiError(409, "Conflict", f"job {job.id} has already ended; nothing to cancel")
    store.flag(job.id, Artifact.CANCEL)
    if status != RQStatus.STARTED:
        # If it started meanwhile, cancel() refuses and the flag stops it instead.
        with contextlib.suppress(Exception):
            job.cancel()


#: Seconds of job timeout per sweep member for its metrics (a classical estimate can take
#: seconds on a stiff member), samples and exports, which run after training.
SWEEP_MEMBER_S = 10


def sweep_size(job: RQJob) -> int:
    """How many members the job's sweep has (0: not a sweep), from its spec."""
    spec = job.args[0] if job.args else {}
    sweep = spec.get("sweep") if isinstance(spec, dict) else None
    return len(next(iter(sweep.values()), [])) if isinstance(sweep, dict) and sweep else 0


def check_member(job: RQJob, member: int | None) -> None:
    """A sweep's results need ``?member=i``; a plain job's take none (422 saying which)."""
    n = sweep_size(job)
    if n and member is None:
        raise ApiError(
            422, "Unprocessable Content", f"job {job.id} is a sweep of {n} members: add ?member=i (0..{n - 1})"
        )
    if not n and member is not None:
        raise ApiError(422, "Unprocessable Content", f"job {job.id} is not a sweep: leave out member")
    if member is not None and member >= n:
        raise ApiError(422, "Unprocessable Content", f"job {job.id} has members 0..{n - 1}, not {member}")


def artifact(store: ArtifactStore, job: RQJob, name: Artifact, member: int | None = None) -> bytes:
    """A stored artifact (of a sweep's ``member``, checked), or 409 saying why there is none."""
    check_member(job, member)
    data = store.get(job.id, name, member)
    if data is None:
        status = describe(job).status
        if status in ("queued", "running"):
            raise ApiError(409, "Conflict", f"job {job.id} is {status}; its results are not ready")
        raise ApiError(409, "Conflict", f"job {job.id} ended {status} and has no such result")
    return data
