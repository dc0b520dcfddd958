"""Jobs a worker popped from a queue and died before starting.

A worker that listens on several queues (the fair levels) dequeues with one BLPOP over them,
which, unlike RQ's single-queue dequeue, keeps no intermediate copy: a worker killed between the
pop and its work horse's start would lose the job (its record says ``queued``, but it is in no
queue and no registry). Workers' periodic maintenance puts such a job back at the front of its
queue once it has been orphaned for :data:`ORPHAN_AGE_S` (longer than any pop-to-start).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC

from redis import Redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import str_to_date

from common.keys import queue_jobs

ORPHAN_AGE_S = 30.0


def requeue_orphans(redis: Redis, base: str, queues: Sequence[Queue], now: float | None = None) -> list[str]:
    """Put orphaned jobs of the queue ``base`` back at the front of their level; their ids."""
    by_name = {q.name: q for q in queues}
    now = time.time() if now is None else now
    found: list[str] = []
    for raw in redis.zrangebyscore(queue_jobs(base), "-inf", now - ORPHAN_AGE_S):
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        queue = _orphaned(redis, job_id, by_name, now)
        if queue is not None:
            queue.push_job_id(job_id, at_front=True)
            found.append(job_id)
    return found


def _orphaned(redis: Redis, job_id: str, by_name: dict[str, Queue], now: float) -> Queue | None:
    """The queue to put ``job_id`` back in, when it is queued in name only."""
    status, origin, enqueued_at = (
        _text(v) for v in redis.hmget(Job.key_for(job_id), "status", "origin", "enqueued_at")
    )
    if status != JobStatus.QUEUED.value or origin is None:
        return None
    queue = by_name.get(origin)
    if queue is None or redis.lpos(queue.key, job_id) is not None:
        return None
    # A job enqueued (or requeued) moments ago may still be on its way to a work horse.
    if enqueued_at and now - str_to_date(enqueued_at).replace(tzinfo=UTC).timestamp() < ORPHAN_AGE_S:
        return None
    return queue


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)
