"""Where a job's artifacts live in Redis, shared by the worker (writes) and the API (reads).

Each artifact is one Redis string under ``odeserve:job:{id}:{name}`` with the job's result TTL,
so every API replica can read it. Size cap: ``ODESERVE_MAX_ARTIFACT_BYTES`` per artifact
(64 MiB by default; a 20,000-point sample set with derivatives is about 2 MB, a model 100 kB).
Torch-free.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

PREFIX = "odeserve:job:"
SAMPLES = "samples.json"
HISTORY = "history.json"
TORCHSCRIPT = "model.pt"
EXPORT = "model.pt2"
CANCEL = "cancel"


def key(job_id: str, name: str) -> str:
    return f"{PREFIX}{job_id}:{name}"


def put(redis: Redis, job_id: str, name: str, data: bytes, ttl_s: int, max_bytes: int) -> bool:
    """Store one artifact; False (and nothing stored) when it is over the cap."""
    if len(data) > max_bytes:
        return False
    redis.set(key(job_id, name), data, ex=ttl_s)
    return True


def put_json(redis: Redis, job_id: str, name: str, value: Any, ttl_s: int, max_bytes: int) -> bool:
    return put(redis, job_id, name, json.dumps(value, separators=(",", ":")).encode(), ttl_s, max_bytes)


def get(redis: Redis, job_id: str, name: str) -> bytes | None:
    return redis.get(key(job_id, name))


def request_cancel(redis: Redis, job_id: str, ttl_s: int) -> None:
    redis.set(key(job_id, CANCEL), b"1", ex=ttl_s)


def cancel_requested(redis: Redis, job_id: str) -> bool:
    return bool(redis.exists(key(job_id, CANCEL)))
