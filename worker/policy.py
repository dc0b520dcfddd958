"""What a worker agrees to run, and when a failed job is tried again.

* **Only the solve job.** Anyone who can write to Redis can enqueue a job naming any dotted
  path; :class:`SolveOnlyJob` refuses every function except ``common.queue.JOB_FUNCTION`` (and
  every callback): such a job fails with ``RefusedJob`` without importing or running anything.
* **Retries only for lost workers.** A job is requeued (resuming from its checkpoint) only when
  its worker died, its work horse was killed or Redis went away; a hand-back on shutdown is requeued without
  using a retry; every other failure (an exception in the job, a time-out, a memory cap) is
  deterministic and fails the job once, with its reason.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from common.queue import JOB_FUNCTION

#: Markers of the failures that are retried (RQ's words for a horse that did not return).
#: Redis going away mid-job is the same kind of loss (transient, not the job's fault).
LOST_WORKER_MARKERS = (
    "Work-horse terminated unexpectedly",
    "AbandonedJobError",
    "redis.exceptions.ConnectionError",
    "redis.exceptions.TimeoutError",
)
#: The marker of a hand-back (the job's exception class name).
HANDED_BACK_MARKER = "HandedBack"
#: The marker of a cancel the watchdog carried out (worker.watchdog).
CANCELED_MARKER = "CanceledWhileBusy"


class RefusedJob(Exception):
    """A job that names a function other than the solve job (or a callback)."""


class SolveOnlyJob(Job):
    """An RQ job that resolves to the solve job or to nothing."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if name != JOB_FUNCTION or self.instance is not None:
            raise RefusedJob(f"refused to run {name!r}: this worker runs only {JOB_FUNCTION}")
        return super().func

    # Callbacks are never used by odeserve: a job that names one runs none.
    @property
    def success_callback(self) -> Any:
        return None

    @property
    def failure_callback(self) -> Any:
        return None

    @property
    def stopped_callback(self) -> Any:
        return None


def retries_after_failure(retries_left: int | None, exc_string: str) -> int:
    """The retries a job has left once it failed with ``exc_string``, counted *before* RQ uses
    one: a hand-back gets one more (so it costs none), a lost worker keeps its count, anything
    else gets none (it fails once)."""
    if HANDED_BACK_MARKER in exc_string:
        return (retries_left or 0) + 1
    if any(marker in exc_string for marker in LOST_WORKER_MARKERS):
        return retries_left or 0
    return 0
