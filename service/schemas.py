"""Wire schemas of the HTTP API (responses; the request body is odeserve.spec.ProblemSpec).

The records that cross Redis (progress, metrics, samples) are the shared ones, so the API
documents exactly what the workers write.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.records import Progress, SweepMember
from odeserve.outcome import Outcome
from odeserve.report import HistoryPoint as LossPoint
from odeserve.report import Metrics, Samples

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Why a job failed: its worker died (retries used up), it ran past its time limit plus margin,
#: it overran its memory cap, its queue entry named a function other than the solve job,
#: training diverged (non-finite loss), or another error (the detail says which).
JobErrorType = Literal["worker_died", "timeout", "memory_limit", "refused", "diverged", "error"]


class JobErrorInfo(_Out):
    type: JobErrorType
    detail: str


class Links(_Out):
    """Where a job's resources are; each representation has its own path."""

    self: str
    events: str = Field(..., description="Server-Sent Events: progress and status changes.")
    solution: str = Field(..., description="Samples as JSON.")
    solution_csv: str = Field(..., description="Samples as CSV.")
    model: str = Field(..., description="The TorchScript model (.pt).")
    model_export: str = Field(..., description="The torch.export program (.pt2).")
    history: str
    plot_png: str
    plot_svg: str

    @classmethod
    def of(cls, job_id: str) -> Links:
        j = f"/jobs/{job_id}"
        return cls(
            self=j,
            events=f"{j}/events",
            solution=f"{j}/solution",
            solution_csv=f"{j}/solution.csv",
            model=f"{j}/model.pt",
            model_export=f"{j}/model.pt2",
            history=f"{j}/history",
            plot_png=f"{j}/plot.png",
            plot_svg=f"{j}/plot.svg",
        )


class Job(_Out):
    id: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress
    outcome: Outcome | None = None
    message: str | None = None
    metrics: Metrics | None = Field(
        None, description="For a sweep: the metrics of its worst member by estimated error (see members)."
    )
    members: list[SweepMember] | None = Field(
        None,
        description="A finished sweep's members, in order: each one's parameter values, outcome and metrics. "
        "Their samples, models, history and plots are at the result routes with ?member=index.",
    )
    device: str | None = Field(None, description="Where the job trained: cpu or cuda.")
    resumed_from: int | None = Field(
        None, description="Set when a worker died or shut down mid-job: the iteration another worker resumed from."
    )
    error: JobErrorInfo | None = None
    links: Links

    @field_validator("progress")
    @classmethod
    def _finite_progress(cls, progress: Progress) -> Progress:
        """A diverged step reports a non-finite loss: JSON has no such number, so it is null."""
        if progress.loss is not None and not math.isfinite(progress.loss):
            return progress.model_copy(update={"loss": None})
        return progress


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
