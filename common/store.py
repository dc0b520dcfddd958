"""A job's artifacts and flags in Redis: written by the worker, read by every API replica.

Each artifact is one Redis string (``common.keys.artifact``) with the job's result TTL. Size
cap: ``ODESERVE_MAX_ARTIFACT_BYTES`` per artifact (64 MiB by default; a 20,000-point sample set
with derivatives is about 2 MB, a model 100 kB). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from redis import Redis

from common import keys
from common.keys import Artifact
from common.settings import Settings

#: How long a hand-back request lives (the worker acts on it within a second).
HANDBACK_TTL_S = 600


@dataclass(frozen=True)
class ArtifactStore:
    """Artifacts of jobs, with one TTL and one size cap."""

    redis: Redis
    ttl_s: int
    max_bytes: int

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> ArtifactStore:
        return cls(redis, settings.result_ttl_s, settings.max_artifact_bytes)

    def put(self, job_id: str, name: Artifact, data: bytes, member: int | None = None) -> bool:
        """Store one artifact (of a sweep's ``member``); False (and nothing stored) when it is
        over the cap."""
        if len(data) > self.max_bytes:
            return False
        self.redis.set(keys.artifact(job_id, name, member), data, ex=self.ttl_s)
        return True

    def put_model(
        self, job_id: str, name: Artifact, value: BaseModel | Sequence[BaseModel], member: int | None = None
    ) -> bool:
        """Store a record (or a list of records) as JSON."""
        if not isinstance(value, BaseModel):
            data = b"[" + b",".join(v.model_dump_json().encode() for v in value) + b"]"
        else:
            data = value.model_dump_json().encode()
        return self.put(job_id, name, data, member)

    def get(self, job_id: str, name: Artifact, member: int | None = None) -> bytes | None:
        # redis-py types its sync and async clients' returns as one union; this client is sync.
        data: bytes | None = self.redis.get(keys.artifact(job_id, name, member))  # type: ignore[assignment]
        return data

    def delete(self, job_id: str, name: Artifact) -> None:
        self.redis.delete(keys.artifact(job_id, name))

    # -- flags --------------------------------------------------------------------------------
    def flag(self, job_id: str, name: Artifact) -> None:
        set_flag(self.redis, job_id, name, self.ttl_s)

    def flagged(self, job_id: str, name: Artifact) -> bool:
        return bool(self.redis.exists(keys.artifact(job_id, name)))


def set_flag(redis: Redis, job_id: str, name: Artifact, ttl_s: int) -> None:
    """A flag the job polls while it trains (cancel, hand back)."""
    redis.set(keys.artifact(job_id, name), b"1", ex=ttl_s)


def record_outcome(redis: Redis, outcome: str, duration_s: float) -> None:
    """Count a finished job (for /metrics): outcome counts and total training time."""
    with redis.pipeline() as pipe:
        pipe.hincrby(keys.STATS, f"outcome:{outcome}", 1)
        pipe.hincrbyfloat(keys.STATS, "duration_sum", duration_s)
        pipe.hincrby(keys.STATS, "duration_count", 1)
        pipe.execute()


@dataclass(frozen=True)
class Stats:
    outcomes: dict[str, int]
    duration_sum: float
    duration_count: int


def read_stats(redis: Redis) -> Stats:
    stored: dict[bytes, bytes] = redis.hgetall(keys.STATS)  # type: ignore[assignment]  # sync client, see get()
    raw = {k.decode(): v.decode() for k, v in stored.items()}
    return Stats(
        outcomes={k.split(":", 1)[1]: int(v) for k, v in raw.items() if k.startswith("outcome:")},
        duration_sum=float(raw.get("duration_sum", 0.0)),
        duration_count=int(raw.get("duration_count", 0)),
    )
