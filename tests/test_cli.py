"""The odeserve CLI solves locally, writes results in the service's shape, and plots."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.problems import ROOT, public_problems, with_options


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
        "--quiet",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "error of y vs exact" in out.stdout and "outcome: budget_reached" in out.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result) == {"metrics", "samples", "history"}
    assert set(result["samples"]) == {"variable", "x", "values", "derivatives", "residuals", "accuracy"}
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
