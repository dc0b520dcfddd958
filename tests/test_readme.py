"""The README's HTTP examples, run as written (bash, curl) against a live ``odeserve serve``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import wait_for
from tests.problems import ROOT


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading}"
    return match.group(1)


@pytest.fixture
def live_server(redis_server, tmp_path):
    from common.redis_server import free_port

    port = free_port()
    env = dict(
        os.environ,
        ODESERVE_REDIS_URL=redis_server.url,
        ODESERVE_QUEUE="odeserve-readme",
        ODESERVE_DATA_DIR=str(tmp_path / "var"),
        ODESERVE_TORCH_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "odeserve", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, 0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_readme_curl_lines_work_as_written(live_server, tmp_path) -> None:
    import numpy as np
    import torch

    script = readme_block("## HTTP API by example").replace("localhost:8000", f"localhost:{live_server}")
    assert '"localhost' in script and "'localhost" not in script  # $ID is expanded: double quotes
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "event: end" in out.stdout and '"status":"succeeded"' in out.stdout
    assert "x,y,y',equations[0]" in out.stdout
    assert '"status":409' in out.stdout.replace(" ", "")  # cancel of the finished job
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(-1, 1)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    exported = torch.export.load(str(tmp_path / "model.pt2")).module()
    exact = np.exp(-(x.numpy() ** 2))
    assert np.max(np.abs(scripted(x).numpy() - exact)) < 1e-5
    assert np.max(np.abs(exported(x).detach().numpy() - exact)) < 1e-5
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()


def test_readme_download_of_a_missing_job_fails_instead_of_saving_the_error(live_server, tmp_path) -> None:
    lines = [ln for ln in readme_block("## HTTP API by example").splitlines() if "-o model.pt " in ln]
    (line,) = lines
    line = line.replace("localhost:8000", f"localhost:{live_server}")
    out = subprocess.run(
        ["bash", "-c", line], cwd=tmp_path, env={**os.environ, "ID": "no-such-job"}, capture_output=True
    )
    assert out.returncode == 22  # curl -f: HTTP error
    assert not (tmp_path / "model.pt").exists()


def readme_python(heading: str) -> str:
    """The first ```python block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_readme_inverse_and_parametric_curl_examples_work_as_written(live_server, tmp_path) -> None:
    import torch

    inverse = readme_block("## Inverse problems").replace("localhost:8000", f"localhost:{live_server}")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", inverse], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"status":"queued"' in out.stdout.replace(" ", ""), out.stderr + out.stdout
    script = readme_block("## Parametric models").replace("localhost:8000", f"localhost:{live_server}")
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "x,k,y,y',equations[0]" and len(lines) == 1 + 3 * 5
    model = torch.jit.load(str(tmp_path / "decay.pt"))
    got = float(model(torch.tensor([[1.0, 1.3]], dtype=torch.float64))[0, 0])
    assert abs(got - 2.718281828459045**-1.3) < 1e-4


@pytest.mark.slow
def test_readme_parametric_python_example_runs_as_written(tmp_path) -> None:
    code = readme_python("## Parametric models")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0].split()
    assert float(first[0]) <= 1e-4 and first[1] == "True"
    assert (tmp_path / "decay.pt").is_file() and (tmp_path / "decay.pt2").is_file()


def test_readme_sweep_curl_example_works_as_written(live_server, tmp_path) -> None:
    import torch

    script = readme_block("## Sweeps").replace("localhost:8000", f"localhost:{live_server}")
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "x,N,N',equations[0]" and len(lines) == 4
    assert abs(float(lines[-1].split(",")[1]) - 100 * 2.718281828459045**-10) < 1e-2  # k = 1 at x = 10
    model = torch.jit.load(str(tmp_path / "member0.pt"))
    assert abs(float(model(torch.tensor([[4.0]], dtype=torch.float64))[0, 0]) - 100 * 2.718281828459045**-1) < 1e-2


@pytest.mark.slow
def test_readme_sweep_python_example_runs_as_written(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    code = readme_python("## Sweeps")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["0.25}", "0.5}", "1.0}"] and all(ln.endswith("True") for ln in lines)
