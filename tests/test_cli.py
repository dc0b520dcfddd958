"""The odeserve CLI solves locally, writes results in the service's shape, and plots."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.problems import NONLINEAR, ROOT, public_problems, with_options


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "odeserve", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_solve_writes_metrics_samples_plot_and_model(tmp_path) -> None:
    spec = with_options(public_problems()["lagaris2"], max_iterations=400)
    (tmp_path / "p.json").write_text(json.dumps(spec))
    out = run(
        "solve",
        "p.json",
        "--out",
        "r.json",
        "--plot",
        "s.png",
        "--model",
        "m.pt",
        "--export",
        "m.pt2",
        "--device",
        "auto",  # the GPU where one is visible, else the CPU
        "--quiet",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "error of y vs exact" in out.stdout and "outcome: converged" in out.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result) == {"metrics", "samples", "history"}
    assert set(result["samples"]) == {
        "variable",
        "parameters",
        "x",
        "values",
        "derivatives",
        "residuals",
        "non_finite",
        "accuracy",
    }
    assert result["metrics"]["accuracy"]["met"] is True and "tolerance 1.0e-04 (relative L2): met" in out.stdout
    assert result["metrics"]["error"]["y"]["rel_l2"] < 1e-5
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "m.pt").stat().st_size > 1000 and (tmp_path / "m.pt2").stat().st_size > 1000


def test_invalid_problem_exits_2_with_the_message(tmp_path) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps({"equations": ["y' = sinn(x)"], "domain": [0, 1], "conditions": ["y(0) = 0"]})
    )
    out = run("solve", "bad.json", cwd=tmp_path)
    assert out.returncode == 2
    assert "equations[0]: unknown function 'sinn' at column 6 (did you mean 'sin'?)" in out.stderr
    assert run("solve", "missing.json", cwd=tmp_path).returncode == 2


def test_progress_bar_ends_with_the_outcome_when_the_time_limit_stops_training(tmp_path) -> None:
    spec = with_options(NONLINEAR, max_iterations=200000, time_limit_s=1.5)
    (tmp_path / "p.json").write_text(json.dumps(spec))
    out = run("solve", "p.json", cwd=tmp_path)
    # 3: the tolerance was not met, which depends on how far 1.5 s of training got on this machine
    assert out.returncode in (0, 3), out.stderr
    assert "outcome: time_limit" in out.stdout
    last = out.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("time_limit") and "100%" in last, last
    iterations = int(out.stdout.split("iterations: ")[1].split()[0])
    assert f"{iterations}/{iterations}" in last, last


def test_a_bad_device_exits_2_with_the_reason(tmp_path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(public_problems()["lagaris2"]))
    for device, reason in (("foo", "Expected one of cpu, cuda"), ("meta", "trains on a cpu or cuda device")):
        out = run("solve", "p.json", "--device", device, "--quiet", cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert f"error: --device {device}: " in out.stderr and reason in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_bad_json_is_reported_as_invalid_json(tmp_path) -> None:
    (tmp_path / "bad.json").write_text('{"equations": ["y = 1",}')
    out = run("solve", "bad.json", cwd=tmp_path)
    assert out.returncode == 2
    assert "bad.json is not valid JSON" in out.stderr and "line 1 column 24" in out.stderr
    assert "expression" not in out.stderr


def test_hints_for_the_variable_and_for_ln(tmp_path) -> None:
    for equation, hint in ((["y' = -t*y"], 'set "variable": "t"'), (["y' = ln(x + 2)"], "did you mean 'log'")):
        (tmp_path / "p.json").write_text(
            json.dumps({"equations": equation, "domain": [0, 1], "conditions": ["y(0) = 1"]})
        )
        out = run("solve", "p.json", cwd=tmp_path)
        assert out.returncode == 2 and hint in out.stderr, out.stderr


def test_tolerance_not_met_exits_3_and_says_so(tmp_path) -> None:
    spec = with_options(public_problems()["lagaris2"], max_iterations=30, tolerance=1e-6)
    (tmp_path / "p.json").write_text(json.dumps(spec))
    out = run("solve", "p.json", "--out", "r.json", "--quiet", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "estimated error of y" in out.stdout and "tolerance 1.0e-06 (relative L2): NOT MET" in out.stdout
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert metrics["accuracy"]["met"] is False and metrics["accuracy"]["tolerance"] == 1e-6
    assert metrics["estimate"]["method"] == "classical"
    assert metrics["accuracy"]["estimated_rel_l2"] == metrics["estimate"]["rel_l2"] > 1e-6
