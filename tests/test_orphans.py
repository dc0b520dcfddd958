"""A job popped by a worker that died before starting it is put back (worker.orphans)."""

from __future__ import annotations

import time

from redis import Redis

from common.keys import queue_jobs
from common.queue import JOB_FUNCTION, make_queue
from common.settings import Settings
from worker.orphans import ORPHAN_AGE_S, requeue_orphans


def test_a_job_popped_but_never_started_is_requeued_once(redis_server) -> None:
    redis = Redis.from_url(redis_server.url)
    settings = Settings(queue="odeserve-orphans", fair_levels=2)
    queue = make_queue(redis, settings)
    levels = queue.levels()
    kept = levels[1].enqueue(JOB_FUNCTION, {"equations": []})
    lost = levels[1].enqueue(JOB_FUNCTION, {"equations": []})
    for job in (kept, lost):
        redis.zadd(queue_jobs(settings.queue), {job.id: time.time()})
    redis.lrem(levels[1].key, 0, lost.id)  # what a BLPOP by a worker killed at once leaves
    assert requeue_orphans(redis, settings.queue, levels) == []  # too young: may be on its way
    later = time.time() + ORPHAN_AGE_S + 1
    assert requeue_orphans(redis, settings.queue, levels, now=later) == [lost.id]
    assert levels[1].job_ids[0] == lost.id and set(levels[1].job_ids) == {kept.id, lost.id}
    assert requeue_orphans(redis, settings.queue, levels, now=later) == []  # in its queue again
    levels[1].empty()
