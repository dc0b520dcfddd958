"""odeserve with default options; the error is measured every few iterations (clock paused)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.common import Result, Tracker
from odeserve.hooks import Hooks, Step
from odeserve.problem import load_problem
from odeserve.solver.solve import DTYPES, build_trial, solve

CHECK_EVERY = 5


def run(name: str, spec: dict[str, Any], device: str = "cpu") -> Result:
    problem = load_problem(spec)
    tracker = Tracker(problem)
    state: dict[str, Any] = {}

    def predictor(trial, theta):
        def predict(xs: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(xs, dtype=theta.dtype, device=theta.device)
            with torch.no_grad():
                return trial.derivatives(theta, x, 0)[0].double().cpu().numpy()

        return predict

    def on_step(step: Step) -> None:
        if step.iteration % CHECK_EVERY == 0 and "trial" in state:
            tracker.check(predictor(state["trial"], step.theta))

    # solve() builds the trial itself; the first step needs it, so build it the same way.
    state["trial"], _, _ = build_trial(problem, torch.device(device), DTYPES[problem.options.precision])
    tracker.start = __import__("time").perf_counter()
    solution = solve(problem, device=device, hooks=Hooks(on_step=on_step))
    return tracker.result(
        "odeserve", name, lambda xs: solution(xs), solution.result.iterations, note=solution.outcome.value
    )
