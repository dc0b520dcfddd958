"""The Redis key layout of odeserve (besides RQ's own ``rq:*`` keys), in one place.

odeserve:job:{id}:{artifact}        artifacts and flags of a job (see ``Artifact``)
odeserve:job:{id}:member:{i}:{artifact}  a sweep member's artifacts
odeserve:idempotency:{owner}:{sha}  Idempotency-Key reservations
odeserve:queue:{queue}:owner:{owner}:jobs  the owner's queued and running job ids (sorted set, by submit time)
odeserve:queue:{queue}:jobs                every queued and running job id (sorted set: the queue cap)
odeserve:owner:{owner}:rate:{min}   the owner's submissions in one minute
odeserve:stats                      outcome counts and training time (for /metrics)
odeserve:job:{id}:events            pub/sub channel: the job's progress and its end (for SSE)
"""

from __future__ import annotations

import hashlib
from enum import Enum

PREFIX = "odeserve"
STATS = f"{PREFIX}:stats"


class Artifact(str, Enum):
    """What a job stores beside RQ's record, each under ``odeserve:job:{id}:{name}``."""

    SAMPLES = "samples.json"
    HISTORY = "history.json"
    TORCHSCRIPT = "model.pt"
    EXPORT = "model.pt2"
    CHECKPOINT = "checkpoint.pt"
    CANCEL = "cancel"  # flag: cancel requested
    HANDBACK = "handback"  # flag: checkpoint and give the job back (worker shutdown)


def artifact(job_id: str, name: Artifact, member: int | None = None) -> str:
    """A job's artifact; a sweep's member ``i`` has its own under ``member:{i}:``."""
    if member is None:
        return f"{PREFIX}:job:{job_id}:{name.value}"
    return f"{PREFIX}:job:{job_id}:member:{member}:{name.value}"


def idempotency(owner: str, key: str) -> str:
    return f"{PREFIX}:idempotency:{owner}:" + hashlib.sha256(key.encode()).hexdigest()


def owner_jobs(queue: str, owner: str) -> str:
    return f"{PREFIX}:queue:{queue}:owner:{owner}:jobs"


def queue_jobs(queue: str) -> str:
    return f"{PREFIX}:queue:{queue}:jobs"


def owner_rate(owner: str, minute: int) -> str:
    return f"{PREFIX}:owner:{owner}:rate:{minute}"


def events(job_id: str) -> str:
    """The pub/sub channel of a job's live events (``common.records.JobEvent``)."""
    return f"{PREFIX}:job:{job_id}:events"
