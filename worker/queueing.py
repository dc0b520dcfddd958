"""The queue both sides agree on: name from settings, RQ's JSON serializer, the job's dotted
path. Imports neither torch nor FastAPI."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from service.settings import Settings

#: Enqueued by dotted path, so the API never imports the solver.
JOB_FUNCTION = "worker.jobs.solve_job"


def make_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue, connection=redis, serializer=JSONSerializer)
