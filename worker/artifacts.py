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
CHECKPOINT = "checkpoint.pt"
HANDBACK = "handback"


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


def request_handback(redis: Redis, job_id: str, ttl_s: int = 600) -> None:
    """Ask the job to checkpoint and give itself back to the queue (worker shutdown)."""
    redis.set(key(job_id, HANDBACK), b"1", ex=ttl_s)


def handback_requested(redis: Redis, job_id: str) -> bool:
    return bool(redis.exists(key(job_id, HANDBACK)))


def clear_handback(redis: Redis, job_id: str) -> None:
    redis.delete(key(job_id, HANDBACK))


def delete(redis: Redis, job_id: str, name: str) -> None:
    redis.delete(key(job_id, name))


STATS = "odeserve:stats"


def record_outcome(redis: Redis, outcome: str, duration_s: float) -> None:
    """Count a finished job (for /metrics): outcome counts and total training time."""
    with redis.pipeline() as pipe:
        pipe.hincrby(STATS, f"outcome:{outcome}", 1)
        pipe.hincrbyfloat(STATS, "duration_sum", duration_s)
        pipe.hincrby(STATS, "duration_count", 1)
        pipe.execute()


def read_stats(redis: Redis) -> dict[str, Any]:
    raw = {k.decode(): v.decode() for k, v in redis.hgetall(STATS).items()}
    return {
        "outcomes": {k.split(":", 1)[1]: int(v) for k, v in raw.items() if k.startswith("outcome:")},
        "duration_sum": float(raw.get("duration_sum", 0.0)),
        "duration_count": int(raw.get("duration_count", 0)),
    }
