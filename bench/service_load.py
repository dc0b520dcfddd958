"""Service figures against a real ``odeserve serve`` (embedded Redis, one worker):

* submit latency of ``POST /solve`` with 50 concurrent clients (p50, p99, max), bounded count;
* delay from submit to training start on an idle worker (RQ start, first progress report);
* per-job overhead of a tiny job on an idle worker (end to end minus its training);
* submit latency at a paced rate (``--rates``) from 50 clients while every worker trains;
* submit latency of a flood: ``--submissions`` POSTs, each client sending its next as soon as
  the last is answered (the API's capacity, and its latency when saturated);
* with ``--complete``: every submitted job is waited for; errors, completions and jobs/minute.

``python -m bench.service_load [--submissions 1000] [--clients 50] [--workers 2] [--complete]
[--baseline REV]``;
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
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS, ROOT, baseline_tree, machine, short_rev
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


def start_service(port: int, data: str, workers: int, tree: Path = ROOT) -> subprocess.Popen:
    """``odeserve serve`` with its defaults, from the code in ``tree``."""
    env = dict(os.environ, ODESERVE_DATA_DIR=data, PYTHONPATH=str(tree))
    for name in ("ODESERVE_REDIS_URL", "ODESERVE_TORCH_THREADS"):  # serve's defaults
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "odeserve", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=tree,
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


def job_overhead(client: httpx.Client, runs: int = 20) -> dict[str, float]:
    """Per-job overhead of a tiny job on an idle worker: submit to finish as the API records it
    (``created_at`` to ``finished_at``) minus the job's own training time
    (``metrics.train_time_s``), one job at a time; also the end-to-end time a polling client
    sees (submit to the finished record in hand, polled every 5 ms)."""
    overhead, seen, train = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        job = client.post("/solve", json=SMALL).json()
        while (j := client.get(f"/jobs/{job['id']}").json())["status"] in ("queued", "running"):
            time.sleep(0.005)
        seen.append(time.perf_counter() - t0)
        span = datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["created_at"])
        train.append(j["metrics"]["train_time_s"])
        overhead.append(span.total_seconds() - train[-1])
    return {
        "jobs": runs,
        "overhead_s_median": statistics.median(overhead),
        "overhead_s_p90": percentile(overhead, 0.9),
        "train_s_median": statistics.median(train),
        "client_end_to_end_s_median": statistics.median(seen),
    }


def submit_latency(base: str, submissions: int, clients: int, ids: list[str]) -> dict[str, Any]:
    """``submissions`` POSTs from ``clients`` concurrent clients, each on its own kept-alive
    connection (as an SDK's client is used). One asyncio loop drives them all, so the load
    generator, which shares this machine's cores with the API and the workers, costs little CPU
    and no lock contention of its own is timed."""
    return asyncio.run(_submit_all(base, submissions, clients, ids))


async def _timed_submit(c: httpx.AsyncClient, latencies: list[float], codes: Counter[int], ids: list[str]) -> None:
    """One POST /solve, its latency and status recorded (and the job's id when accepted)."""
    t = time.perf_counter()
    r = await c.post("/solve", json=SMALL)
    latencies.append(time.perf_counter() - t)
    codes[r.status_code] += 1
    if r.status_code == 202:
        ids.append(r.json()["id"])


def _summary(latencies: list[float], codes: Counter[int]) -> dict[str, Any]:
    return {
        "status_codes": codes,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


async def connected(base: str, clients: int) -> list[httpx.AsyncClient]:
    """``clients`` clients, each connected before any clock starts: building an httpx client
    costs ~15 ms of this loop's CPU (its TLS context), which would otherwise be timed as the
    first requests' latency (up to a second for 50 clients)."""
    pool = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(clients)]
    await asyncio.gather(*(c.get("/healthz") for c in pool))
    return pool


async def _submit_all(base: str, submissions: int, clients: int, ids: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    todo = iter(range(submissions))
    pool = await connected(base, clients)

    async def client(c: httpx.AsyncClient) -> None:
        for _ in todo:  # shared: each submission is taken by exactly one client
            await _timed_submit(c, latencies, codes, ids)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in pool))
    wall = time.perf_counter() - t0
    for c in pool:
        await c.aclose()
    return {
        "submissions": submissions,
        "clients": clients,
        **_summary(latencies, codes),
        "submissions_per_s": submissions / wall,
    }


#: A job that keeps a worker training until it is canceled: a public problem, Adam only, with a
#: budget it cannot reach in the run.
LONG = {
    "equations": ["y'' + y'/5 + y = -exp(-x/5)*cos(x)/5"],
    "domain": [0, 2],
    "conditions": ["y(0) = 0", "y'(0) = 1"],
    "options": {"optimizer": "adam", "max_iterations": 200000, "time_limit_s": 300, "escalate": False},
}


def paced_latency(base: str, rate: float, seconds: float, clients: int, workers: int) -> dict[str, Any]:
    """Submit latency as users load a service: ``clients`` clients, each submitting one small
    job every ``clients / rate`` seconds (an open-loop schedule: a slow answer does not delay the
    next submission), for ``seconds``, while every worker trains a long job. The small jobs queue
    behind the long ones, so the workers train throughout."""
    with httpx.Client(base_url=base, timeout=30) as c:
        long_ids = [c.post("/solve", json=LONG).json()["id"] for _ in range(workers)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(c.get(f"/jobs/{i}").json()["progress"]["iteration"] > 0 for i in long_ids):
                break
            time.sleep(0.1)
        ids: list[str] = []
        result = asyncio.run(_paced(base, rate, seconds, clients, ids))
        training = sum(c.get(f"/jobs/{i}").json()["status"] == "running" for i in long_ids)
        for i in long_ids:
            c.delete(f"/jobs/{i}")
    return result | {"workers_training_at_the_end": training, "ids": ids}


async def _paced(base: str, rate: float, seconds: float, clients: int, ids: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    period = clients / rate
    pool = await connected(base, clients)
    start = time.perf_counter() + 0.5

    async def client(k: int) -> None:
        sent = 0
        while (due := start + k / rate + sent * period) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await _timed_submit(pool[k], latencies, codes, ids)
            sent += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    for c in pool:
        await c.aclose()
    return {
        "clients": clients,
        "offered_per_s": rate,
        "seconds": seconds,
        "submissions": len(latencies),
        **_summary(latencies, codes),
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


def measure(args: argparse.Namespace, tree: Path = ROOT) -> dict[str, Any]:
    """Every figure, against a fresh ``odeserve serve`` running the code in ``tree``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        proc = start_service(port, data, args.workers, tree)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                wait_ready(client)
                delay = start_delay(client)
                overhead = job_overhead(client)
            paced = []
            for rate in (float(r) for r in args.rates.split(",") if r):
                run = paced_latency(base, rate, args.paced_seconds, args.clients, args.workers)
                drained = completion(base, run.pop("ids"), time.perf_counter(), args.timeout)
                paced.append(run | {"unfinished": drained["unfinished"]})
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
    return {
        "workers": args.workers,
        "submit_to_start": delay,
        "job_overhead": overhead,
        "paced_submit_latency": paced,
        "submit_latency": load,
        "completion": done,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--complete", action="store_true", help="wait for every job and report throughput")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--rates", default="20,50", help="paced submissions per second (all clients together)")
    ap.add_argument("--paced-seconds", type=float, default=20)
    ap.add_argument("--baseline", help="also measure this commit's service first (a temporary git worktree)")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": machine()}
    if args.baseline:
        rev = short_rev(args.baseline)
        with baseline_tree(rev) as tree:
            result["baseline"] = {"commit": rev} | measure(args, tree)
    result |= measure(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
