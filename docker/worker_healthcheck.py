"""Compose healthcheck of a worker container: healthy when a worker of this container (same
hostname) is registered on the queue with a heartbeat fresher than ODESERVE_HEARTBEAT_S +
ODESERVE_HEARTBEAT_GRACE_S. Exit 0 healthy, 1 not."""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, Worker

from common.settings import get_settings


def main() -> int:
    settings = get_settings()
    redis = Redis.from_url(settings.require_redis_url(), socket_connect_timeout=3, socket_timeout=5)
    host = socket.gethostname()
    now = datetime.now(UTC)
    for worker in Worker.all(queue=Queue(settings.queue, connection=redis)):
        beat = worker.last_heartbeat
        if worker.hostname != host or beat is None:
            continue
        beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
        if (now - beat).total_seconds() < settings.worker_silence_s:
            return 0
    print(f"no live worker of queue {settings.queue!r} on {host}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
