"""The typed records a job carries through Redis: written by one side, read by the other.

``JobMeta`` lives in RQ's ``job.meta`` (the API writes owner and request id at enqueue, the worker
the progress); ``JobResult`` is the job's return value. Both are pydantic models so that a field
is named once, and validated where it is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from odeserve.outcome import Outcome
from odeserve.report import Metrics

ANONYMOUS = "anonymous"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")  # records written by an older version still load


class Progress(_Record):
    """Where training is: written by the worker at most twice a second."""

    iteration: int = 0
    max_iterations: int
    loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = Field(None, description="Estimate from the iteration budget and the time limit.")


class JobMeta(_Record):
    """``job.meta``: who submitted the job, how to trace it, and how far it has come."""

    owner: str = ANONYMOUS
    request_id: str | None = None
    progress: Progress
    resumed_from: int | None = Field(None, description="The iteration a resumed run continued from.")

    @classmethod
    def of(cls, job_meta: dict[str, Any] | None) -> JobMeta:
        return cls.model_validate(job_meta or {"progress": {"max_iterations": 0}})


class SweepMember(_Record):
    """One member of a sweep: its parameter values, how its training ended and its metrics
    (its samples, history, models and plots are at the job's routes with ``?member=index``)."""

    index: int
    parameters: dict[str, float]
    outcome: Outcome
    message: str
    metrics: Metrics


class JobResult(_Record):
    """A finished job's return value (small: the samples and models are artifacts). For a sweep,
    ``members`` lists every member, and outcome and metrics are those of the worst member."""

    outcome: Outcome
    message: str
    metrics: Metrics
    device: str
    members: list[SweepMember] | None = None


class JobEvent(_Record):
    """A live event of a job, published on ``common.keys.events(id)``: progress while it trains
    (``progress``) and ``end`` once its result is written (the API then sends the final job)."""

    kind: Literal["progress", "end"]
    iteration: int = 0
    max_iterations: int = 0
    loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    phase: str | None = None
