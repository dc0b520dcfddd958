"""``odeserve serve``: embedded Redis, a worker and the API come up; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

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
