"""``odeserve serve``: embedded Redis, a worker and the API come up; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.problems import ROOT


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_starts_everything_and_ctrl_c_stops_everything(tmp_path) -> None:
    from common.redis_server import free_port

    port = free_port()
    env = dict(os.environ, ODESERVE_DATA_DIR=str(tmp_path / "var"), PYTHONPATH=str(ROOT))
    env.pop("ODESERVE_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "odeserve", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _port_open(port) and httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 90)
        children = _children(proc.pid)
        assert len(children) >= 3  # redis-server, a worker, uvicorn
        r = httpx.post(
            f"http://127.0.0.1:{port}/solve",
            json={
                "equations": ["y' = -y"],
                "domain": [0, 1],
                "conditions": ["y(0) = 1"],
                "options": {"max_iterations": 50},
            },
        )
        assert r.status_code == 202
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "stopped" in out
        time.sleep(0.5)
        alive = [p for p in children if os.path.exists(f"/proc/{p}")]
        assert alive == [], f"left running: {alive}"
        assert not _port_open(port)
        assert (tmp_path / "var" / "redis").is_dir()  # the AOF lives there
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _start_serve(tmp_path, port: int, data_dir, log_name: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, ODESERVE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    env.pop("ODESERVE_REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "odeserve", "serve", "--port", str(port), "--workers", "1", *extra],
        env=env,
        cwd=tmp_path,
        stdout=(tmp_path / log_name).open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _conf(data_dir) -> dict[str, str]:
    lines = (data_dir / "redis" / "redis.conf").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if " " in line)


def test_serve_redis_is_private_runs_only_solve_jobs_and_dies_with_serve(tmp_path) -> None:
    """Issue 10 §4 and §6, issue 11 §3: the embedded Redis needs a password only serve's
    processes know and keeps its files private; a job naming another function is refused; a
    second serve on the same port or data directory exits non-zero saying why; kill -9 of serve
    takes every child with it."""
    import redis as redis_py
    from rq import Queue
    from rq.serializers import JSONSerializer

    from common.redis_server import free_port

    port, data = free_port(), tmp_path / "var"
    proc = _start_serve(tmp_path, port, data, "serve.log", "--log-file", str(tmp_path / "full.log"))
    try:
        wait_for(lambda: _port_open(port) and httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 90)
        children = _children(proc.pid)
        conf = _conf(data)
        redis_port = int(conf["port"])
        with pytest.raises(redis_py.exceptions.AuthenticationError):
            redis_py.Redis(port=redis_port).ping()
        assert os.stat(data / "redis").st_mode & 0o077 == 0
        assert os.stat(data / "redis" / "redis.conf").st_mode & 0o077 == 0
        for f in (data / "redis").rglob("*"):
            assert os.stat(f).st_mode & 0o007 == 0, f  # nothing world-readable (AOF included)
        assert conf["requirepass"] not in (tmp_path / "serve.log").read_text()
        # The owner of the files (this user) can reach Redis, and still runs nothing but solve jobs.
        r = redis_py.Redis(port=redis_port, password=conf["requirepass"])
        marker = tmp_path / "owned"
        job = Queue("odeserve", connection=r, serializer=JSONSerializer).enqueue("os.system", f"touch {marker}")
        wait_for(lambda: job.get_status(refresh=True) == "failed", 60)
        assert not marker.exists() and "RefusedJob" in job.latest_result().exc_string

        # The console is for a person: no JSON request lines, no RQ chatter; the file has it all.
        for _ in range(20):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
        console = (tmp_path / "serve.log").read_text()
        assert not [line for line in console.splitlines() if line.startswith("{")], console
        assert "cleaning registries" not in console.lower() and "ready on" in console
        full = (tmp_path / "full.log").read_text().splitlines()
        assert any('"message": "request"' in line and "/healthz" in line for line in full)

        taken = subprocess.run(
            [sys.executable, "-m", "odeserve", "serve", "--port", str(port)],
            env=dict(os.environ, ODESERVE_DATA_DIR=str(tmp_path / "other"), PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 2 and f"port {port}" in taken.stderr, taken.stderr + taken.stdout
        locked = subprocess.run(
            [sys.executable, "-m", "odeserve", "serve", "--port", str(free_port())],
            env=dict(os.environ, ODESERVE_DATA_DIR=str(data), PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert locked.returncode == 2 and "in use" in locked.stderr, locked.stderr + locked.stdout

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in children), 30)
        wait_for(lambda: not _port_open(port), 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
