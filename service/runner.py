"""``odeserve serve``: Redis (embedded unless configured), N workers and the API on one machine.

Every child runs in its own process; Ctrl-C (or SIGTERM) stops them all, workers first, then
the API, then the embedded Redis, so nothing is left running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.redis_server import RedisServer, env_with_redis, free_port
from common.settings import Settings, get_settings

EXAMPLE: dict[str, Any] = {
    "equations": ["y'' + y'/5 + y = -exp(-x/5)*cos(x)/5"],
    "domain": [0, 2],
    "conditions": ["y(0) = 0", "y'(0) = 1"],
    "exact": {"y": "exp(-x/5)*sin(x)"},
    "output": {"points": 5, "derivatives": 1},
}


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_ready(base: str, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _http("GET", f"{base}/readyz")[0] == 200:
                return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    return False


def run_example(base: str) -> bool:
    print(f"submitting the example: {EXAMPLE['equations'][0]}  with  {', '.join(EXAMPLE['conditions'])}")
    status, job = _http("POST", f"{base}/solve", EXAMPLE)
    if status != 202:
        print(f"submit failed: {status} {job}")
        return False
    url = f"{base}/jobs/{job['id']}"
    print(f"queued as {url}")
    while job["status"] in ("queued", "running"):
        time.sleep(0.5)
        job = _http("GET", url)[1]
        p = job["progress"]
        print(
            f"\r  {job['status']:8s} iteration {p['iteration']}/{p['max_iterations']}  loss {p['loss'] or 0:.3e}",
            end="",
            flush=True,
        )
    print()
    print(f"{job['status']}: {job.get('message')}")
    if job["status"] != "succeeded":
        return False
    err = job["metrics"]["error"]["y"]
    print(f"relative L2 error against the exact solution: {err['rel_l2']:.2e}")
    sol = _http("GET", f"{url}/solution")[1]
    for x, y in zip(sol["x"], sol["values"]["y"]):
        print(f"  y({x:g}) = {y:.9f}")
    print(f"model: curl -o model.pt {url}/model   (or ?format=export for a .pt2)")
    return True


@dataclass
class _Processes:
    """The children of ``serve``: the embedded Redis (if any), the workers and the API."""

    env: dict[str, str]
    redis: RedisServer | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "odeserve", "worker"], env=self.env)
        self.started.append(proc)
        return proc

    def start_api(self, host: str, port: int) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "service.app:app_factory", "--factory"]
        cmd += ["--host", host, "--port", str(port), "--log-level", "warning"]
        self.api = subprocess.Popen(cmd, env=self.env)
        self.started.append(self.api)

    def core_alive(self) -> bool:
        """The API and the embedded Redis: if either dies, the whole service ends."""
        redis_alive = self.redis is None or (self.redis.process is not None and self.redis.process.poll() is None)
        return self.api is not None and self.api.poll() is None and redis_alive

    def replace_dead_workers(self) -> None:
        """A worker that exits (crash, OOM kill) is replaced."""
        for i, w in enumerate(self.workers):
            if w.poll() is not None:
                print(f"worker {w.pid} exited with {w.returncode}; starting a new one")
                self.workers[i] = self.start_worker()

    def stop(self) -> None:
        """Workers and the API first (SIGTERM, then SIGKILL after 15 s), then Redis."""
        for c in self.started:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for c in self.started:
            try:
                c.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
        if self.redis is not None:
            self.redis.stop()


def _redis(settings: Settings) -> tuple[str, RedisServer | None]:
    if settings.redis_url:
        return settings.redis_url, None
    redis = RedisServer(free_port(), Path(settings.data_dir) / "redis").start()
    print(f"embedded Redis on {redis.url} (data and AOF in {redis.data_dir})")
    return redis.url, redis


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, example: bool = False) -> int:
    settings = get_settings()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url, redis = _redis(settings)
    procs = _Processes(env=env_with_redis(url), redis=redis)
    try:
        procs.workers = [procs.start_worker() for _ in range(workers)]
        procs.start_api(host, port)
        base = f"http://{host}:{port}"
        if not wait_ready(base):
            print("the service did not become ready")
            return 1
        print(f"odeserve is ready on {base}  (OpenAPI: {base}/docs); Ctrl-C stops everything")
        if example and not run_example(base):
            return 1
        while not stopping and procs.core_alive():
            procs.replace_dead_workers()
            time.sleep(0.2)
        return 0
    finally:
        print("stopping ...")
        procs.stop()
        print("stopped")
