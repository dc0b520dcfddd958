"""The queue both sides agree on: name from settings, RQ's JSON serializer (never pickle), and
the job's dotted path, so the API enqueues by name and never imports the solver."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from common.settings import Settings

#: The one function a worker runs: enqueued by dotted path.
JOB_FUNCTION = "worker.jobs.solve_job"


def make_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue, connection=redis, serializer=JSONSerializer)
