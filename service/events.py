"""``GET /jobs/{id}/events``: a job's progress and status changes as Server-Sent Events.

One Redis pub/sub subscription per client (the worker publishes ``common.records.JobEvent`` on
``common.keys.events(id)``); the job record is read when the stream opens, when the worker says
the job ended, and after ``IDLE_S`` seconds without events (a keep-alive that also notices a job
that failed or was requeued without publishing). The stream ends with the final job.

Events: ``status`` (the job, whenever its status changes), ``progress`` (iteration, loss,
elapsed, eta, phase; id = the iteration) and ``end`` (the final job). ``Last-Event-ID`` resumes:
progress up to that iteration is not sent again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis as AsyncRedis

from common import keys
from common.records import JobEvent
from service.schemas import Job

#: Seconds without an event before a keep-alive comment and a look at the job record.
IDLE_S = 5.0
#: How long to wait for RQ to record the end of a job whose worker said it ended.
SETTLE_S = 10.0
ENDED = ("succeeded", "failed", "canceled")


def sse(event: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _job_event(kind: str, job: Job) -> str:
    return sse(kind, job.model_dump_json(), str(job.progress.iteration))


def parse_last_id(value: str | None) -> int:
    """The iteration a client has seen (``Last-Event-ID``); -1 when none or not a number."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


async def _settled(describe: Callable[[], Any]) -> Job:
    """The job once RQ has recorded its end (the worker publishes ``end`` just before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    job: Job = await asyncio.to_thread(describe)
    while job.status not in ENDED and loop.time() < deadline:
        await asyncio.sleep(0.1)
        job = await asyncio.to_thread(describe)
    return job


async def _next_event(pubsub: Any) -> JobEvent | None:
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=IDLE_S)
    if msg is None:
        return None
    try:
        return JobEvent.model_validate(json.loads(msg["data"]))
    except (ValueError, ValidationError):
        return None


async def stream(redis: AsyncRedis, job_id: str, describe: Callable[[], Job], last_id: int) -> AsyncIterator[str]:
    """The event stream of one job; ``describe`` reads its record (a blocking call)."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.events(job_id))
    try:
        job = await asyncio.to_thread(describe)
        status = job.status
        yield _job_event("status", job)
        while job.status not in ENDED:
            event = await _next_event(pubsub)
            if event is None:
                job = await asyncio.to_thread(describe)
                if job.status != status:
                    status = job.status
                    yield _job_event("status", job)
                yield ": keep-alive\n\n"
                continue
            if status != "running" and event.kind == "progress":
                status = "running"
                yield _job_event("status", await asyncio.to_thread(describe))
            if event.kind == "end":
                job = await _settled(describe)
                break
            if event.iteration > last_id:
                last_id = event.iteration
                yield sse("progress", event.model_dump_json(exclude={"kind"}), str(event.iteration))
        yield _job_event("end", job)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()
