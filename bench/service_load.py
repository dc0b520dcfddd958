"""Service figures against a real ``odeserve serve`` (embedded Redis, one worker):

* submit latency of ``POST /solve`` with 50 concurrent clients (p50, p99, max), bounded count;
* delay from submit to training start on an idle worker (RQ start, first progress report);
* with ``--complete``: every submitted job is waited for; errors, completions and jobs/minute.

``python -m bench.service_load [--submissions 1000] [--clients 50] [--workers 2] [--complete]``;
writes bench/results/service.json. Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from typing import Any

import httpx

from bench.common import RESULTS, ROOT, machine
from common.redis_server import free_port

SMALL = {
    "equations": ["y' = -y"],
    "domain": [0, 1],
    "conditions": ["y(0) = 1"],
    "options": {"max_iterations": 20, "adam_iterations": 10},
    "output": {"points": 11},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_service(port: int, data: str, workers: int) -> subprocess.Popen:
    env = dict(os.environ, ODESERVE_DATA_DIR=data, PYTHONPATH=str(ROOT), ODESERVE_TORCH_THREADS="1")
    env.pop("ODESERVE_REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "odeserve", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(client: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("service did not become ready")


def start_delay(client: httpx.Client, runs: int = 5) -> dict[str, float]:
    rq_start, first_progress = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        job = client.post("/solve", json=SMALL | {"options": {"max_iterations": 2000, "time_limit_s": 5}}).json()
        while True:
            j = client.get(f"/jobs/{job['id']}").json()
            if j["progress"]["iteration"] >= 1 or j["status"] not in ("queued", "running"):
                first_progress.append(time.perf_counter() - t0)
                break
            time.sleep(0.005)
        created = datetime.fromisoformat(j["created_at"])
        started = datetime.fromisoformat(j["started_at"])
        rq_start.append((started - created).total_seconds())
        client.delete(f"/jobs/{job['id']}")
        while client.get(f"/jobs/{job['id']}").json()["status"] in ("queued", "running"):
            time.sleep(0.05)
    return {
        "rq_start_s_median": statistics.median(rq_start),
        "first_progress_s_median": statistics.median(first_progress),
    }


def submit_latency(base: str, submissions: int, clients: int, ids: list[str]) -> dict[str, Any]:
    """``submissions`` POSTs from ``clients`` concurrent clients, each on its own kept-alive
    connection (as an SDK's client is used). One asyncio loop drives them all, so the load
    generator, which shares this machine's cores with the API and the workers, costs little CPU
    and no lock contention of its own is timed."""
    return asyncio.run(_submit_all(base, submissions, clients, ids))


async def _submit_all(base: str, submissions: int, clients: int, ids: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    todo = iter(range(submissions))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            for _ in todo:  # shared: each submission is taken by exactly one client
                t = time.perf_counter()
                r = await c.post("/solve", json=SMALL)
                latencies.append(time.perf_counter() - t)
                codes[r.status_code] += 1
                if r.status_code == 202:
                    ids.append(r.json()["id"])

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "submissions": submissions,
        "clients": clients,
        "status_codes": codes,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "submissions_per_s": submissions / wall,
    }


def completion(base: str, ids: list[str], started: float, timeout_s: float) -> dict[str, Any]:
    """Poll every job to its end (bounded); count outcomes and the throughput."""
    pending = set(ids)
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, timeout=30) as c:
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                status = c.get(f"/jobs/{job_id}").json()["status"]
                if status not in ("queued", "running"):
                    pending.discard(job_id)
                    statuses[status] = statuses.get(status, 0) + 1
            time.sleep(1.0)
    wall = time.perf_counter() - started
    return {
        "jobs": len(ids),
        "statuses": statuses,
        "unfinished": len(pending),
        "wall_s": wall,
        "jobs_per_minute": 60 * (len(ids) - len(pending)) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--complete", action="store_true", help="wait for every job and report throughput")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        proc = start_service(port, data, args.workers)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                wait_ready(client)
                delay = start_delay(client)
            ids: list[str] = []
            t0 = time.perf_counter()
            load = submit_latency(base, args.submissions, args.clients, ids)
            done = completion(base, ids, t0, args.timeout) if args.complete else None
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "machine": machine(),
        "workers": args.workers,
        "submit_to_start": delay,
        "submit_latency": load,
        "completion": done,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
