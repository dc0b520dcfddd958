"""Issue 10 §2: quotas under concurrency, the global queue cap and fair dequeueing, against a
real API process (uvicorn), a real Redis and real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import wait_for
from tests.problems import ROOT, with_options

DECAY = with_options(
    {"equations": ["y' = -y"], "domain": [0, 1], "conditions": ["y(0) = 1"]}, max_iterations=20, adam_iterations=10
)
KEYS = ("key-a", "key-b", "key-c")


@contextmanager
def api_process(redis_url: str, queue: str, **env: str) -> Iterator[str]:
    """A real API process (uvicorn) on a free port; yields its base URL."""
    from common.redis_server import free_port

    port = free_port()
    full = dict(os.environ, PYTHONPATH=str(ROOT), ODESERVE_REDIS_URL=redis_url, ODESERVE_QUEUE=queue, **env)
    cmd = [sys.executable, "-m", "uvicorn", "service.app:app_factory", "--factory", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def api(redis_server, tmp_path) -> Iterator[tuple[str, str]]:
    """An API process with keys, 3 active jobs per key and a queue cap of 5, on its own queue."""
    queue = f"odeserve-quota-{tmp_path.name}"
    limits = {"ODESERVE_MAX_ACTIVE_JOBS_PER_KEY": "3", "ODESERVE_MAX_QUEUED_JOBS": "5"}
    with api_process(redis_server.url, queue, ODESERVE_API_KEYS=",".join(KEYS), **limits) as base:
        yield base, queue


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _submit_many(base: str, key: str, n: int) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        spec = with_options(DECAY, seed=i)
        return httpx.post(f"{base}/solve", json=spec, headers={"X-API-Key": key}, timeout=30)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_submits_respect_the_key_limit_and_the_queue_cap(api) -> None:
    base, _ = api
    first = _submit_many(base, "key-a", 30)
    assert Counter(r.status_code for r in first) == {202: 3, 429: 27}
    second = _submit_many(base, "key-b", 30)
    # 3 of key-a's and 2 of key-b's jobs wait: the queue (cap 5) is full.
    codes = Counter(r.status_code for r in second)
    assert codes == {202: 2, 503: 28}, codes
    full = next(r for r in second if r.status_code == 503)
    assert int(full.headers["retry-after"]) > 0 and "queue is full" in full.json()["detail"]
    refused = next(r for r in first if r.status_code == 429)
    assert int(refused.headers["retry-after"]) > 0


def test_slots_are_released_when_jobs_end_and_a_backlog_cannot_starve_another_key(api, start_worker) -> None:
    base, queue = api
    a = [_submit_many(base, "key-a", 1)[0].json()["id"] for _ in range(3)]  # one after another
    # key-a has 3 waiting: its 4th is refused until one ends; cancelling one frees its slot.
    assert _submit_many(base, "key-a", 1)[0].status_code == 429
    assert httpx.delete(f"{base}/jobs/{a[2]}", headers={"X-API-Key": "key-a"}).status_code == 202
    a.append(_submit_many(base, "key-a", 1)[0].json()["id"])
    b = _submit_many(base, "key-b", 1)[0].json()["id"]
    start_worker(queue)

    def job(job_id: str, key: str) -> dict:
        return httpx.get(f"{base}/jobs/{job_id}", headers={"X-API-Key": key}).json()

    wait_for(lambda: all(job(j, "key-a")["status"] in ("succeeded", "canceled") for j in a), 300)
    wait_for(lambda: job(b, "key-b")["status"] == "succeeded", 120)
    started = {j: job(j, "key-a")["started_at"] for j in (a[0], a[1], a[3])}
    # key-b's single job ran right after key-a's first, before key-a's backlog.
    assert started[a[0]] < job(b, "key-b")["started_at"] < min(started[a[1]], started[a[3]])
    # Every slot was released when its job ended: key-a may submit 3 again.
    assert Counter(r.status_code for r in _submit_many(base, "key-a", 3)) == {202: 3}
