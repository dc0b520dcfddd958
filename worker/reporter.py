"""The Redis-backed training hooks of a job: progress reports, the cancel and hand-back flags, and
checkpoints. Short Redis outages only skip reports: training never dies of one."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job

from common import keys
from common.keys import Artifact
from common.records import JobEvent, JobMeta, Progress
from common.store import ArtifactStore
from odeserve.hooks import Hooks, Step, TrainState

log = logging.getLogger("odeserve.job")

#: At most this many progress writes per second (RQ writes only the meta field).
PROGRESS_INTERVAL_S = 0.5
#: How often the cancel and hand-back flags are read.
FLAG_POLL_S = 0.25
#: How long final writes keep retrying while Redis is unreachable.
WRITE_RETRY_S = 120.0
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)

StopReason = Literal["cancel", "handback"]


def tolerant(fn: Callable[[], Any]) -> Any:
    """Best-effort Redis call during training: an outage must not kill the job."""
    try:
        return fn()
    except REDIS_ERRORS as exc:
        log.warning("redis unavailable during training: %s", exc)
        return None


def persistent(fn: Callable[[], Any]) -> Any:
    """A write that must happen (results): retry until Redis is back, within WRITE_RETRY_S."""
    deadline = time.monotonic() + WRITE_RETRY_S
    delay = 0.5
    while True:
        try:
            return fn()
        except REDIS_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class JobReporter:
    """One job's view of Redis while it trains."""

    def __init__(self, job: Job, store: ArtifactStore, max_iterations: int, time_limit_s: float) -> None:
        self.job = job
        self.store = store
        self.max_iterations = max_iterations
        self.time_limit_s = time_limit_s
        self.meta = JobMeta.of(job.meta)
        self.stop_reason: StopReason | None = None
        self._last_write = 0.0
        self._last_poll = 0.0

    def hooks(self, checkpoint_every_s: float) -> Hooks:
        return Hooks(
            on_step=self.on_step,
            should_stop=self.should_stop,
            checkpoint=self.checkpoint,
            checkpoint_every_s=checkpoint_every_s,
        )

    def write_progress(self, progress: Progress, must: bool = False, phase: str | None = None) -> None:
        self.meta.progress = progress
        self.job.meta.update(self.meta.model_dump(mode="json"))
        (persistent if must else tolerant)(self.job.save_meta)
        # Live events for GET /jobs/{id}/events: the final write (must) ends the stream.
        event = JobEvent(kind="end" if must else "progress", phase=phase, **progress.model_dump())
        tolerant(lambda: self.job.connection.publish(keys.events(self.job.id), event.model_dump_json()))

    def on_step(self, step: Step) -> None:
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL_S and step.iteration < self.max_iterations:
            return
        self._last_write = now
        rate = step.elapsed / max(step.iteration, 1)
        eta = min(rate * (self.max_iterations - step.iteration), max(self.time_limit_s - step.elapsed, 0.0))
        self.write_progress(
            Progress(
                iteration=step.iteration,
                max_iterations=self.max_iterations,
                loss=step.loss,
                elapsed_s=step.elapsed,
                eta_s=eta,
            ),
            phase=str(step.phase),
        )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_poll < FLAG_POLL_S:
            return False
        self._last_poll = now
        if tolerant(lambda: self.store.flagged(self.job.id, Artifact.CANCEL)):
            self.stop_reason = "cancel"
        elif tolerant(lambda: self.store.flagged(self.job.id, Artifact.HANDBACK)):
            self.stop_reason = "handback"
        return self.stop_reason is not None

    def checkpoint(self, state: TrainState) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        tolerant(lambda: self.store.put(self.job.id, Artifact.CHECKPOINT, buf.getvalue()))

    def load_checkpoint(self) -> TrainState | None:
        """The last checkpoint of this job (a resumed run), or None."""
        import torch

        data = tolerant(lambda: self.store.get(self.job.id, Artifact.CHECKPOINT))
        if not data:
            return None
        try:
            state: TrainState = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means starting over, not failing
            log.warning("ignoring an unreadable checkpoint: %s", exc)
            return None
        self.meta.resumed_from = int(state["iteration"])
        self.job.meta.update(self.meta.model_dump(mode="json"))
        tolerant(self.job.save_meta)
        return state
