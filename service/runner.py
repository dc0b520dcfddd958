"""``odeserve serve``: Redis (embedded unless configured), N workers and the API on one machine.

Every child runs in its own process; Ctrl-C (or SIGTERM) stops them all, workers first, then
the API, then the embedded Redis, so nothing is left running. A ``kill -9`` of ``serve`` takes
them too: each child asks the kernel for SIGKILL when ``serve`` dies (PR_SET_PDEATHSIG).

Before starting anything, ``serve`` checks that its port is free and locks its data directory
(one embedded Redis per AOF directory); either failing is a clear message and exit status 2.
The embedded Redis requires a password generated at each start and known only to the processes
``serve`` starts (it reaches them in their environment, never on a command line).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.redis_server import RedisServer, die_with_parent, env_with_redis, free_port
from common.settings import Settings, get_settings
from odeserve.threads import usable_cores

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


def wait_ready(base: str, procs: _Processes | None = None, timeout_s: float = 120.0) -> bool:
    """True once ``/readyz`` answers 200; False on time-out or as soon as our API or Redis died
    (then whatever answers on the port is not ours)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if procs is not None and not procs.core_alive():
            return False
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
    print(f"model: curl -fo model.pt {url}/model.pt   (or {url}/model.pt2 for the torch.export program)")
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
        proc = subprocess.Popen([sys.executable, "-m", "odeserve", "worker"], env=self.env, preexec_fn=die_with_parent)
        self.started.append(proc)
        return proc

    def start_api(self, host: str, port: int) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "service.app:app_factory", "--factory"]
        cmd += ["--host", host, "--port", str(port), "--log-level", "warning", "--no-access-log"]
        self.api = subprocess.Popen(cmd, env=self.env, preexec_fn=die_with_parent)
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


class StartError(RuntimeError):
    """``serve`` cannot start (port taken, data directory in use): a message for the console."""


def check_port(host: str, port: int) -> None:
    """Fail before starting anything when ``host:port`` cannot be bound (another server)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartError(
                f"port {port} on {host} is not available ({exc.strerror}); is another odeserve serve "
                "running? Stop it, or choose another with --port"
            ) from None


def lock_data_dir(path: Path) -> int:
    """Hold an exclusive lock on ``path`` for the life of this process (released by the kernel
    when it exits, even on kill -9), so a second ``serve`` never opens the same AOF files."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StartError(
            f"the data directory {path} is in use by another odeserve serve; stop it, or set "
            "ODESERVE_DATA_DIR to another directory"
        ) from None
    return fd


def _redis(settings: Settings) -> tuple[str, RedisServer | None]:
    if settings.redis_url:
        return settings.redis_url, None
    redis = RedisServer(
        free_port(),
        Path(settings.data_dir) / "redis",
        password=secrets.token_urlsafe(32),
        maxmemory=settings.redis_maxmemory,
        die_with_parent=True,
    ).start()
    print(f"embedded Redis on {redis.public_url} (password required; data and AOF in {redis.data_dir})")
    return redis.url, redis


def _child_env(url: str, log_format: str, log_file: str | None) -> dict[str, str]:
    env = env_with_redis(url)
    env["ODESERVE_LOG_FORMAT"] = log_format
    if log_format == "text":  # a person at a terminal: warnings only (the example's line stays readable)
        env.setdefault("ODESERVE_LOG_LEVEL", "WARNING")
    if log_file:
        env["ODESERVE_LOG_FILE"] = str(Path(log_file).resolve())
    return env


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    example: bool = False,
    log_format: str = "text",
    log_file: str | None = None,
) -> int:
    """Run everything until Ctrl-C. ``workers`` defaults to the usable cores (each job uses one
    thread unless it is large, see ``odeserve.threads``)."""
    settings = get_settings()
    try:
        check_port(host, port)
        if not settings.redis_url:
            lock_data_dir(Path(settings.data_dir))
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url, redis = _redis(settings)
    procs = _Processes(env=_child_env(url, log_format, log_file), redis=redis)
    try:
        procs.workers = [procs.start_worker() for _ in range(workers or usable_cores())]
        procs.start_api(host, port)
        base = f"http://{host}:{port}"
        if not wait_ready(base, procs):
            print("the service did not become ready")
            return 1
        print(
            f"odeserve is ready on {base} with {len(procs.workers)} worker(s)  (OpenAPI: {base}/docs); Ctrl-C stops everything"
        )
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
