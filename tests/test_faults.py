"""Fault suite (marked ``fault``; runs in CI): a stream of jobs through real workers while 20
workers are killed with SIGKILL and Redis is killed and restarted 5 times. Afterwards every
accepted job has completed exactly once."""

from __future__ import annotations

import random
import time

import pytest

from tests.conftest import make_client, wait_for
from tests.problems import public_problems, with_options

pytestmark = pytest.mark.fault

JOBS = 24
WORKER_KILLS = 20
REDIS_RESTARTS = 5
FAST_FAILOVER = {"ODESERVE_CHECKPOINT_S": "0.5", "ODESERVE_HEARTBEAT_S": "1", "ODESERVE_HEARTBEAT_GRACE_S": "4"}


def test_kills_and_restarts_lose_and_duplicate_nothing(tmp_path, start_worker) -> None:
    from redis import Redis
    from rq.job import Job
    from rq.results import Result
    from rq.serializers import JSONSerializer

    from common.redis_server import RedisServer, free_port

    rng = random.Random(7)
    server = RedisServer(free_port(), tmp_path / "redis").start()
    queue = "odeserve-faults"
    spec = with_options(public_problems()["lagaris2"], max_iterations=250)
    workers = [start_worker(queue, ODESERVE_REDIS_URL=server.url, **FAST_FAILOVER) for _ in range(3)]
    accepted: list[str] = []
    try:
        with make_client(server.url, queue, max_retries=100, heartbeat_s=1, heartbeat_grace_s=4) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60)

            def submit() -> None:
                r = client.post("/solve", json=with_options(spec, seed=len(accepted)))
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
                else:
                    assert r.status_code == 503, r.text  # only while Redis is down

            restarts_at = set(rng.sample(range(WORKER_KILLS), REDIS_RESTARTS))
            for kill in range(WORKER_KILLS):
                for _ in range(JOBS // WORKER_KILLS + 1):
                    if len(accepted) < JOBS:
                        submit()
                time.sleep(rng.uniform(0.8, 2.0))
                victim = rng.choice([w for w in workers if w.alive()])
                victim.kill9()
                workers.remove(victim)
                workers.append(start_worker(queue, ODESERVE_REDIS_URL=server.url, **FAST_FAILOVER))
                if kill in restarts_at:
                    server.stop(kill=True)
                    time.sleep(rng.uniform(0.2, 1.5))
                    server.start()
            while len(accepted) < JOBS:
                submit()

            def all_done() -> bool:
                for j in accepted:
                    r = client.get(f"/jobs/{j}")
                    if r.status_code != 200 or r.json()["status"] in ("queued", "running"):
                        return False
                return True

            wait_for(all_done, 600, interval=1.0)
            statuses = {j: client.get(f"/jobs/{j}").json()["status"] for j in accepted}
        assert len(accepted) == JOBS
        assert list(statuses.values()).count("succeeded") == JOBS, statuses
        redis = Redis.from_url(server.url)
        for job_id in accepted:
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            successes = [r for r in job.results() if r.type == Result.Type.SUCCESSFUL]
            assert len(successes) == 1, (job_id, len(successes))
            assert redis.exists(f"odeserve:job:{job_id}:model.pt")
    finally:
        server.stop()


def test_hand_backs_cost_no_retry_and_bad_jobs_fail_alone(tmp_path, start_worker) -> None:
    """Issue 10 §3/§1/§4 as attacks on a running stream: with no retries at all, workers are
    stopped (SIGTERM: hand-back) again and again, while a job over the memory cap and a job
    naming another function are slipped into the queue. Every accepted job still succeeds
    exactly once; the bad ones fail once each, with their reason, and take no worker down."""
    from redis import Redis
    from rq.job import Job
    from rq.results import Result
    from rq.serializers import JSONSerializer

    from common.queue import JOB_FUNCTION, make_queue
    from common.redis_server import RedisServer, free_port
    from common.settings import Settings

    server = RedisServer(free_port(), tmp_path / "redis").start()
    queue = "odeserve-faults-handback"
    env = FAST_FAILOVER | {"ODESERVE_JOB_MEMORY_MB": "1500"}
    spec = with_options(public_problems()["lagaris2"], max_iterations=400)
    workers = [start_worker(queue, ODESERVE_REDIS_URL=server.url, **env) for _ in range(2)]
    marker = tmp_path / "owned"
    try:
        with make_client(server.url, queue, max_retries=0) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60)
            accepted = [client.post("/solve", json=with_options(spec, seed=i)).json()["id"] for i in range(6)]
            rq_queue = make_queue(Redis.from_url(server.url), Settings(queue=queue))
            hog = with_options(spec, points=4000, network={"width": 200, "depth": 2}, adam_iterations=1)
            bad = [
                rq_queue.enqueue(JOB_FUNCTION, hog, meta={"progress": {"max_iterations": 3}}).id,
                rq_queue.enqueue("os.system", f"touch {marker}").id,
            ]
            for _ in range(4):
                time.sleep(1.5)
                victim = workers.pop(0)
                victim.terminate()
                workers.append(start_worker(queue, ODESERVE_REDIS_URL=server.url, **env))

            def all_done() -> bool:
                return all(
                    client.get(f"/jobs/{j}").json()["status"] not in ("queued", "running") for j in accepted + bad
                )

            wait_for(all_done, 600, interval=1.0)
            states = {j: client.get(f"/jobs/{j}").json() for j in accepted + bad}
        assert [states[j]["status"] for j in accepted] == ["succeeded"] * 6, states
        assert states[bad[0]]["error"]["type"] == "memory_limit", states[bad[0]]
        assert states[bad[1]]["error"]["type"] == "refused" and not marker.exists()
        redis = Redis.from_url(server.url)
        for job_id in accepted:
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            assert len([r for r in job.results() if r.type == Result.Type.SUCCESSFUL]) == 1
        assert all(w.alive() for w in workers)
    finally:
        server.stop()
