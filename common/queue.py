"""The queue both sides agree on: name from settings, RQ's JSON serializer (never pickle), and
the job's dotted path, so the API enqueues by name and never imports the solver.

Fair dequeueing: the queue is ``settings.fair_levels`` RQ queues, ``odeserve`` (level 0) and
``odeserve-level1`` ... A key's job waits in the level given by how many of that key's jobs were
already queued or running when it was submitted (capped at the last level), and workers always
take from the lowest non-empty level. So one key's backlog of a hundred jobs sits in the upper
levels while another key's single job goes to level 0 and runs next.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from common.settings import Settings

#: The one function a worker runs: enqueued by dotted path.
JOB_FUNCTION = "worker.jobs.solve_job"


def level_name(base: str, level: int) -> str:
    return base if level == 0 else f"{base}-level{level}"


class FairQueue(Queue):
    """Level 0 of the fair queue; ``count`` and ``levels()`` cover every level."""

    fair_levels: int = 1

    def levels(self) -> list[Queue]:
        """Every level, lowest (served first) first; level 0 is this queue."""
        others = [
            Queue(level_name(self.name, n), connection=self.connection, serializer=self.serializer)
            for n in range(1, self.fair_levels)
        ]
        return [self, *others]

    def level(self, n: int) -> Queue:
        return self.levels()[min(max(n, 0), self.fair_levels - 1)]

    @property
    def count(self) -> int:
        """Jobs waiting in every level."""
        return sum(Queue.count.fget(q) for q in self.levels())  # type: ignore[attr-defined]


def make_queue(redis: Redis, settings: Settings) -> FairQueue:
    queue = FairQueue(settings.queue, connection=redis, serializer=JSONSerializer)
    queue.fair_levels = settings.fair_levels
    return queue
