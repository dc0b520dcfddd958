"""Settings of the API and the workers, from ``ODESERVE_*`` environment variables: one class, one
set of names, for both kinds of process."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 86_400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODESERVE_", extra="ignore")

    redis_url: str | None = Field(
        None, description="redis://host:port/db. Unset: `odeserve serve` starts an embedded Redis."
    )
    queue: str = Field("odeserve", description="RQ queue name.")
    result_ttl_s: int = Field(7 * DAY_S, ge=60, description="How long results and artifacts are kept.")
    failure_ttl_s: int = Field(7 * DAY_S, ge=60, description="How long failed jobs are kept.")
    job_timeout_margin_s: int = Field(
        120, ge=10, description="Added to a spec's time limit for the job timeout (export, metrics)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")
    torch_threads: int = Field(
        0,
        ge=0,
        description="Torch CPU threads per job; 0: by problem size (1 for small problems, see odeserve.threads).",
    )
    worker_nice: int = Field(5, ge=0, le=19, description="Workers run at this lower scheduling priority (os.nice).")
    worker_class: Literal["fork", "spawn"] = Field(
        "fork", description="fork: one forked work horse per job (parent never touches CUDA/autograd)."
    )
    checkpoint_s: float = Field(5.0, gt=0, description="Seconds between training checkpoints (in Redis).")
    max_retries: int = Field(
        5, ge=0, description="Requeues of a job whose worker died or shut down (it resumes from its checkpoint)."
    )
    heartbeat_s: int = Field(5, ge=1, description="Worker heartbeat interval while a job runs.")
    heartbeat_grace_s: int = Field(10, ge=1, description="A job whose heartbeat is older than this is abandoned.")

    @property
    def worker_ttl_s(self) -> int:
        """The TTL of a worker's registration in Redis. Idle workers heartbeat every
        ``worker_ttl_s - 15`` s (RQ's dequeue timeout), busy ones every ``heartbeat_s``."""
        return max(self.heartbeat_s * 4, 20)

    @property
    def worker_silence_s(self) -> int:
        """A worker silent for longer than this is dead (readiness stops counting it)."""
        return max(self.heartbeat_s, self.worker_ttl_s - 15) + self.heartbeat_grace_s

    api_keys: str | None = Field(None, description="Comma-separated API keys; unset: no authentication.")
    api_keys_file: str | None = Field(None, description="A file of API keys, one per line.")
    max_active_jobs_per_key: int = Field(0, ge=0, description="Queued + running jobs per key; 0: no limit.")
    rate_limit_per_minute: int = Field(0, ge=0, description="Submissions per key per minute; 0: no limit.")
    data_dir: str = Field("var", description="Where the embedded Redis keeps its AOF files (mode 700).")
    export_cache_dir: str = Field(
        "var/export-templates",
        description="Where workers keep one traced torch.export program per network architecture "
        "(the model files of later jobs reuse it); empty: trace every model.",
    )
    redis_maxmemory: str = Field(
        "1gb", description="maxmemory of the embedded Redis (noeviction: writes fail, never evict, when full)."
    )
    max_queued_jobs: int = Field(
        1000, ge=0, description="Jobs waiting in the queue, all keys together (503 + Retry-After beyond); 0: none."
    )
    fair_levels: int = Field(
        4, ge=1, le=16, description="Dequeue levels: a key's n-th active job waits in level n (fair between keys)."
    )
    job_memory_mb: int = Field(
        4096, ge=0, description="Hard address-space cap (RLIMIT_AS) of each job's process, MiB; 0: none."
    )
    job_baseline_mb: int = Field(1024, ge=0, description="Address space a job uses before its matrices (torch).")
    assumed_gflops: float = Field(
        2.0, gt=0, description="Admission: multiply-adds per second of one core, in billions (conservative)."
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one object a line; text: for people.")
    log_level: str = Field("INFO", description="Level of the console log.")
    log_file: str | None = Field(None, description="Also write JSON logs (level INFO) to this file.")
    # Limits, enforced on submit (422 naming the field).
    max_body_bytes: int = Field(1_000_000, ge=1_000, description="Largest request body accepted (413 beyond).")
    max_iterations: int = Field(200_000, ge=1)
    max_time_limit_s: float = Field(3_600, gt=0)
    max_sample_points: int = Field(20_000, ge=2)
    max_collocation_points: int = Field(5_000, ge=4)
    max_network_parameters: int = Field(200_000, ge=1)
    max_sweep_members: int = Field(256, ge=1, description="Most members of one sweep.")
    max_artifact_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Cap on one stored artifact.")

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error: the API and the workers need one (``odeserve serve``
        sets it for the processes it starts)."""
        if not self.redis_url:
            raise ConfigError("ODESERVE_REDIS_URL is not set (or use `odeserve serve`, which starts Redis)")
        return self.redis_url


class ConfigError(RuntimeError):
    """A setting the process cannot run without is missing or invalid."""


def get_settings() -> Settings:
    """The settings of this process, read from the environment (read once, at start-up)."""
    return Settings()
