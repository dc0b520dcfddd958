"""Wire schemas of the HTTP API (responses; the request body is odeserve.spec.ProblemSpec).

The records that cross Redis (progress, metrics, samples) are the shared ones, so the API
documents exactly what the workers write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.records import Progress
from odeserve.outcome import Outcome
from odeserve.report import HistoryPoint as LossPoint
from odeserve.report import Metrics, Samples

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobErrorInfo(_Out):
    type: str = Field(..., description="worker_died | timeout | memory_limit | refused | diverged | error")
    detail: str


class Links(_Out):
    self: str
    solution: str
    model: str
    history: str


class Job(_Out):
    id: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress
    outcome: Outcome | None = None
    message: str | None = None
    metrics: Metrics | None = None
    device: str | None = Field(None, description="Where the job trained: cpu or cuda.")
    resumed_from: int | None = Field(
        None, description="Set when a worker died or shut down mid-job: the iteration another worker resumed from."
    )
    error: JobErrorInfo | None = None
    links: Links


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
    workers: int
    queued: int


class Solution(Samples):
    """The solution on the output grid: values, derivatives and equation residuals."""


class HistoryPoint(LossPoint):
    """One entry of a job's loss history."""
