"""Wire schemas of the HTTP API (responses; the request body is odeserve.spec.ProblemSpec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Progress(_Out):
    iteration: int = 0
    max_iterations: int
    loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = Field(None, description="Estimate from the iteration budget and the time limit.")


class JobErrorInfo(_Out):
    type: str = Field(..., description="worker_died | timeout | diverged | error")
    detail: str


class Links(_Out):
    self: str
    solution: str
    model: str


class Job(_Out):
    id: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress
    outcome: str | None = Field(None, description="converged | budget_reached | time_limit | diverged | canceled")
    message: str | None = None
    metrics: dict[str, Any] | None = None
    error: JobErrorInfo | None = None
    links: Links


class Solution(_Out):
    variable: str
    x: list[float]
    values: dict[str, list[float]]
    derivatives: dict[str, list[float]]
    residuals: dict[str, list[float]]


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
    workers: int
    queued: int
