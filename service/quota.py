"""Per-key quotas and the global queue cap, reserved atomically in Redis.

One Lua script decides a submission: it drops from the key's and the server's job sets every
job that has ended (its RQ record says finished, failed, canceled or stopped, or has expired),
counts what is left, and either refuses (429 for the key's limit, 503 for the server's queue
cap, both with Retry-After) or adds the new job id to both sets, all in one step, so concurrent
submissions cannot overshoot. A job's slot is released when it ends, whatever ends it, because
the count is derived from the job's own status: there is nothing to release twice, or to forget.
A reserved id whose job was never created (the enqueue failed) stops counting after
``PENDING_GRACE_S``.

The count also places the job in a fair-queue level (``common.queue``): a key's n-th active job
waits in level n.
"""

from __future__ import annotations

import time

from redis import Redis
from rq.job import Job

from common import keys as rkeys
from common.settings import Settings
from service.errors import ApiError

#: How long a reserved id without an RQ record (being enqueued) counts as queued.
PENDING_GRACE_S = 60

_RESERVE = """
local prefix, job_id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local owner_limit, queue_limit, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function count(key)
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local active, waiting = 0, 0
  for i = 1, #entries, 2 do
    local id, since = entries[i], tonumber(entries[i + 1])
    local status = redis.call('HGET', prefix .. id, 'status')
    if status == false then
      if since < now - grace then
        redis.call('ZREM', key, id)
      else
        active, waiting = active + 1, waiting + 1
      end
    elseif status == 'queued' or status == 'deferred' or status == 'scheduled' or status == 'created' then
      active, waiting = active + 1, waiting + 1
    elseif status == 'started' then
      active = active + 1
    else
      redis.call('ZREM', key, id)
    end
  end
  return active, waiting
end
local owner_active = count(KEYS[1])
if owner_limit > 0 and owner_active >= owner_limit then
  return {-1, owner_active}
end
local _, queued = count(KEYS[2])
if queue_limit > 0 and queued >= queue_limit then
  return {-2, queued}
end
redis.call('ZADD', KEYS[1], now, job_id)
redis.call('ZADD', KEYS[2], now, job_id)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return {0, owner_active}
"""


def reserve(redis: Redis, owner: str, job_id: str, settings: Settings) -> int:
    """Check the key's rate and active-job limits and the server's queue cap, and reserve a slot
    for ``job_id``; returns the job's fair-queue level (the key's active jobs before it)."""
    check_rate(redis, owner, settings)
    script = redis.register_script(_RESERVE)
    outcome, count = script(
        keys=[rkeys.owner_jobs(settings.queue, owner), rkeys.queue_jobs(settings.queue)],
        args=[
            Job.redis_job_namespace_prefix,
            job_id,
            time.time(),
            settings.max_active_jobs_per_key,
            settings.max_queued_jobs,
            PENDING_GRACE_S,
            settings.result_ttl_s,
        ],
    )
    if outcome == -1:
        raise ApiError(
            429,
            "Too Many Requests",
            f"this key has {count} queued or running jobs, the limit is "
            f"{settings.max_active_jobs_per_key}; wait for one to finish",
            headers={"Retry-After": "5"},
        )
    if outcome == -2:
        raise ApiError(
            503,
            "Service Unavailable",
            f"the queue is full ({count} jobs waiting, the server's limit is {settings.max_queued_jobs}); retry later",
            headers={"Retry-After": "30"},
        )
    return int(count)


def check_rate(redis: Redis, owner: str, settings: Settings) -> None:
    """429 with Retry-After when the key is over its submissions per minute (INCR: atomic)."""
    if not settings.rate_limit_per_minute:
        return
    window = int(time.time() // 60)
    key = rkeys.owner_rate(owner, window)
    with redis.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count = int(pipe.execute()[0])
    if count > settings.rate_limit_per_minute:
        retry = 60 - int(time.time()) % 60
        raise ApiError(
            429,
            "Too Many Requests",
            f"over {settings.rate_limit_per_minute} submissions per minute for this key",
            headers={"Retry-After": str(max(retry, 1))},
        )
