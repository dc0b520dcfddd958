"""What every benchmark runner shares: the problems, exact solutions, and the tracker that
measures error and time-to-accuracy without counting its own evaluations."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odeserve.evaluate import exact_values as _exact_values
from odeserve.problem import Problem, load_problem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EVAL_POINTS = 1001
THRESHOLDS = (1e-3, 1e-5, 1e-7)


def short_rev(rev: str) -> str:
    """``rev`` as a short commit hash."""
    out = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path]:
    """The code of commit ``rev`` in a temporary ``git worktree``, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)


def eval_grid(problem: Problem) -> np.ndarray:
    return np.linspace(*problem.domain, EVAL_POINTS)


def exact_values(problem: Problem, xs: np.ndarray) -> np.ndarray:
    """(len(xs), m): the exact solution of every unknown."""
    exact = _exact_values(problem.exact, problem.variable, xs)
    return np.stack([exact[u] for u in problem.unknowns], axis=1)


def errors(pred: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(relative L2 over all unknowns, max abs)."""
    diff = pred - exact
    return float(np.linalg.norm(diff) / np.linalg.norm(exact)), float(np.max(np.abs(diff)))


@dataclass
class Result:
    problem: str
    solver: str
    rel_l2: float | None = None
    max_abs: float | None = None
    train_s: float | None = None
    iterations: int | None = None
    time_to: dict[str, float | None] = field(default_factory=dict)
    skipped: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Tracker:
    """Clock that pauses while the error is measured; records first crossings of THRESHOLDS."""

    def __init__(self, problem: Problem, predict: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.problem = problem
        self.xs = eval_grid(problem)
        self.exact = exact_values(problem, self.xs)
        self.predict = predict
        self.start = time.perf_counter()
        self.paused = 0.0
        self.crossed: dict[str, float | None] = {f"{t:g}": None for t in THRESHOLDS}
        self.best = float("inf")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def check(self, predict: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
        t0 = time.perf_counter()
        now = t0 - self.start - self.paused
        fn = predict or self.predict
        assert fn is not None
        rel, _ = errors(np.asarray(fn(self.xs)).reshape(len(self.xs), -1), self.exact)
        self.best = min(self.best, rel)
        for t in THRESHOLDS:
            key = f"{t:g}"
            if self.crossed[key] is None and rel <= t:
                self.crossed[key] = now
        self.paused += time.perf_counter() - t0
        return rel

    def result(
        self,
        solver: str,
        name: str,
        predict: Callable[[np.ndarray], np.ndarray],
        iterations: int,
        note: str | None = None,
    ) -> Result:
        train_s = self.elapsed()
        rel, mx = errors(np.asarray(predict(self.xs)).reshape(len(self.xs), -1), self.exact)
        self.check(predict)
        return Result(name, solver, rel, mx, train_s, iterations, dict(self.crossed), note=note)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.system()}


def load(name: str, spec: dict[str, Any]) -> Problem:
    return load_problem(spec)
