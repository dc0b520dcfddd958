"""``odeserve worker``: one RQ worker on the configured Redis.

Worker class: RQ's default forking ``Worker``. It forks one work horse per job, which gives
heartbeats while a job runs, a hard kill on timeout, and fast starts because the parent has
already imported torch. That is safe because the parent only *imports* torch: it never touches
CUDA (``PYTORCH_NVML_BASED_CUDA_CHECK=1`` keeps even a stray ``is_available()`` from
initialising it) nor runs autograd, both of which break in a forked child. ``spawn``
(``ODESERVE_WORKER_CLASS=spawn``) starts a fresh interpreter per job instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Worker
from rq.job import Job, JobStatus

from common.keys import Artifact
from common.logs import configure_logging
from common.queue import make_queue
from common.settings import ConfigError, Settings, get_settings
from common.store import HANDBACK_TTL_S, set_flag
from worker.orphans import requeue_orphans
from worker.policy import CANCELED_MARKER, SolveOnlyJob, retries_after_failure
from worker.preimport import preimport
from worker.templates import preload

if TYPE_CHECKING:
    _WorkerBase = Worker  # the mixin's methods run on RQ's workers
else:
    _WorkerBase = object


class OdeWorkerMixin(_WorkerBase):
    """What odeserve changes in RQ's workers.

    * The job heartbeat expires soon after a worker dies, so an abandoned job is requeued (and
      resumes from its checkpoint) within ``heartbeat_s + heartbeat_grace_s`` plus the next
      registry cleanup, instead of RQ's 60 s+.
    * SIGTERM hands the running job back: the job is flagged, checkpoints within
      ``CANCEL_POLL_S`` and raises ``HandedBack``, RQ's retry requeues it, and this worker
      exits after that (warm shutdown), instead of training to the end.
    * No pubsub listener thread (see :meth:`subscribe`): the parent stays single-threaded, so
      every fork is safe.
    """

    grace_s: int = 10

    def subscribe(self) -> None:
        # RQ listens for its remote commands (``rq.command``) on a thread of the worker parent.
        # odeserve sends none (cancel and hand-back are flags the job polls), and that thread
        # makes every fork unsafe: while Redis is away it reconnects and logs every 2 s, and a
        # work horse forked while it held a lock (the resolver's, a stream's) waits for it for
        # ever, its job 'running' until its timeout. Without it, the parent has one thread.
        self.pubsub_thread = None

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(self.job_monitoring_interval) + self.grace_s

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        # A Redis blip must not end the monitoring of a running horse: RQ would leave the horse
        # unwatched, its heartbeat would expire and the job would be run twice. Skip this beat;
        # the next one (heartbeat_s later) renews everything once Redis answers again.
        try:
            super().maintain_heartbeats(job, execution)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logging.getLogger("odeserve.worker").warning("heartbeat skipped, Redis unavailable: %s", exc)

    def handle_job_failure(
        self,
        job: Job,
        queue: Any,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        # Retry only what a lost worker left behind; a hand-back costs no retry (worker.policy).
        job.retries_left = retries_after_failure(job.retries_left, exc_string)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        if CANCELED_MARKER in exc_string:  # canceled by the watchdog: the job reads 'canceled'
            with contextlib.suppress(Exception):
                job.set_status(JobStatus.CANCELED)

    def clean_registries(self) -> None:
        super().clean_registries()
        # Jobs popped by a worker that died before starting them (see worker.orphans).
        try:
            found = requeue_orphans(self.connection, self.queues[0].name, self.queues)
        except RedisError:  # Redis away or still loading: the next maintenance tries again
            return
        if found:
            logging.getLogger("odeserve.worker").warning("requeued orphaned jobs", extra={"jobs": found})

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        job_id = self.get_current_job_id()
        if job_id:
            with contextlib.suppress(Exception):
                set_flag(self.connection, job_id, Artifact.HANDBACK, HANDBACK_TTL_S)
        super().request_stop(signum, frame)


class OdeWorker(OdeWorkerMixin, Worker):
    def execute_job(self, job: Job, queue: Any) -> None:
        super().execute_job(job, queue)
        # After the job, not between dequeue and fork: a job popped from the queue but not yet
        # started must not wait (a worker killed then would lose it). The next work horse
        # inherits what the last one traced.
        preload(get_settings())


def worker_class(settings: Settings) -> type[Worker]:
    if settings.worker_class == "spawn":
        from rq.worker import SpawnWorker

        return type("OdeSpawnWorker", (OdeWorkerMixin, SpawnWorker), {"grace_s": settings.heartbeat_grace_s})
    return type("OdeForkWorker", (OdeWorker,), {"grace_s": settings.heartbeat_grace_s})


def run_worker(burst: bool = False, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    try:
        redis_url = settings.require_redis_url()
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if settings.worker_class == "fork":
        preimport()  # torch, scipy, the solver and one-time set-ups: every work horse inherits them
        preload(settings)  # the export templates already on disk

    with contextlib.suppress(OSError):
        os.nice(settings.worker_nice)  # the API, on the same machine, answers first
    configure_logging(settings.log_format, settings.log_level, settings.log_file)
    log = logging.getLogger("odeserve.worker")
    cls = worker_class(settings)
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            # Inside the try: RQ's Worker names its connection on Redis when it is made, and a
            # Redis still down (at start, or not yet back from a restart) must not end the worker.
            worker = _connect(cls, redis_url, settings)
            worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
            if burst or worker._shutdown_requested_date is not None:  # asked to stop (a signal)
                return 0
            # RQ's loop quits (rather than raising) on an error outside its dequeue, e.g. Redis
            # lost during maintenance and back by the time it unregisters: that is not a stop.
            reason = "the worker loop quit on an error (logged above)"
        except RedisError as exc:
            # Redis restarted, is unreachable, or refused a write (full, under ``noeviction``):
            # wait and try again rather than end the worker. A job that was running is settled
            # by the heartbeat rules (failed, never left 'running').
            reason = f"lost Redis ({type(exc).__name__}: {exc})"
        if time.monotonic() - started > 60:  # it had been working: start the backoff again
            delay = 1.0
        log.warning("%s; reconnecting in %.0f s", reason, delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def _connect(cls: type[Worker], redis_url: str, settings: Settings) -> Worker:
    """A worker on a fresh connection, listening on every level of the fair queue."""
    redis = Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=10)
    queues = make_queue(redis, settings).levels()  # lowest level first: fair between keys
    for q in queues:
        q.job_class = SolveOnlyJob
    return cls(
        queues,
        connection=redis,
        job_class=SolveOnlyJob,
        serializer=queues[0].serializer,
        job_monitoring_interval=settings.heartbeat_s,
        maintenance_interval=max(settings.heartbeat_s * 3, 10),
        worker_ttl=settings.worker_ttl_s,
    )
