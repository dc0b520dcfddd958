"""``Idempotency-Key`` on ``POST /solve``: the same key and body give the same job."""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass

from redis import Redis
from rq.job import Job as RQJob

from common import keys
from odeserve.problem import Problem
from service.errors import ApiError

#: How long a request waits for the job that a concurrent request with its key is creating.
CREATING_WAIT_S = 5.0
#: Idempotency keys: at most this long, printable ASCII.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


@dataclass(frozen=True)
class Reservation:
    key: str  # the Redis key holding it
    job_id: str
    new: bool  # False: the same key and body were submitted before; job_id is that job


def reserve(redis: Redis, key: str, problem: Problem, owner: str, job_id: str, ttl_s: int) -> Reservation:
    """Reserve an ``Idempotency-Key`` (per owner) for ``job_id``; the same key with another body
    is a 422. The reservation is atomic (SET NX) and made before the job is enqueued, so
    concurrent retries cannot create two jobs."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422, "Invalid header", "Idempotency-Key must be 1-200 printable ASCII characters", "Idempotency-Key"
        )
    redis_key = keys.idempotency(owner, key)
    record = json.dumps({"job_id": job_id, "spec_hash": problem.spec_hash})
    if redis.set(redis_key, record, nx=True, ex=ttl_s):
        return Reservation(redis_key, job_id, True)
    existing = json.loads(redis.get(redis_key) or "{}")
    if existing.get("spec_hash") != problem.spec_hash:
        raise ApiError(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different problem; use a new key",
            "Idempotency-Key",
        )
    wait_for_job(redis, existing["job_id"])
    return Reservation(redis_key, existing["job_id"], False)


def wait_for_job(redis: Redis, job_id: str, timeout_s: float = CREATING_WAIT_S) -> None:
    """A concurrent request with the same key reserved ``job_id`` and is creating it: wait a
    moment for the job, then answer 409 (with Retry-After) rather than a misleading 404."""
    deadline = time.monotonic() + timeout_s
    while not redis.exists(RQJob.key_for(job_id)):
        if time.monotonic() > deadline:
            raise ApiError(
                409,
                "Conflict",
                "a request with this Idempotency-Key is still creating its job; retry shortly",
                "Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        time.sleep(0.02)


def release(redis: Redis, reservation: Reservation) -> None:
    """Free a reservation whose job was never queued, so that a retry can succeed."""
    with contextlib.suppress(Exception):
        redis.delete(reservation.key)
