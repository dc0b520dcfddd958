"""Real components for the service tests: a Redis server started on a free port for the session,
and real worker processes (``python -m odeserve worker``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.problems import ROOT

# In-process solves use one intra-op thread, as the worker and the CLI do for problems this size
# (odeserve.threads): with every core, two busy processes on a small machine slow each other
# several-fold. Set before torch is first imported; the threads rule's own tests set theirs.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from common.redis_server import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class WorkerProcess:
    """One ``odeserve worker`` in its own process group (so kill -9 takes the horse too)."""

    def __init__(self, redis_url: str, queue: str, log: Path, **env: str) -> None:
        full = dict(os.environ)
        full.update(
            {
                "ODESERVE_REDIS_URL": redis_url,
                "ODESERVE_QUEUE": queue,
                "ODESERVE_HEARTBEAT_S": "2",
                "ODESERVE_HEARTBEAT_GRACE_S": "3",
                "ODESERVE_TORCH_THREADS": "1",
                "PYTHONPATH": str(ROOT),
            }
        )
        full.update(env)
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "odeserve", "worker"],
            env=full,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def threads(self) -> int:
        """Threads of the worker's parent process (Linux)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def log_tail(self, lines: int = 30) -> str:
        """The end of the worker's log, for a failing test's message."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self) -> None:
        """SIGKILL the worker, like a crash or an OOM kill. Its work horse, which RQ puts in a
        process group of its own, dies with it (the job asks for PR_SET_PDEATHSIG)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@pytest.fixture(scope="session")
def start_worker(redis_server, tmp_path_factory) -> Iterator[object]:
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(queue: str = "odeserve-test", **env: str) -> WorkerProcess:
        w = WorkerProcess(redis_server.url, queue, logs / f"worker-{len(started)}.log", **env)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.alive():
            os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait(10)


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def make_client(redis_url: str, queue: str, **overrides):
    from fastapi.testclient import TestClient

    from common.settings import Settings
    from service.app import create_app

    settings = Settings(redis_url=redis_url, queue=queue, **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def service(redis_server, start_worker) -> Iterator[object]:
    """The API (in-process, real Redis) with two real workers on the shared test queue."""
    workers = [start_worker(), start_worker()]
    with make_client(redis_server.url, "odeserve-test") as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        client.worker_logs = [w.log for w in workers]
        yield client
