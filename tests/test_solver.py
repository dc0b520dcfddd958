"""Solving: accuracy against exact solutions, every condition type, outcomes, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from odeserve import Hooks, Outcome, solve
from tests.problems import NONLINEAR, ROUNDING, public_problems, with_options

PROBLEMS = public_problems()
FAST = {"max_iterations": 600}


@pytest.mark.parametrize("name", ["seed_gauss", "seed_poly"])
def test_seed_problems_default_options(name: str) -> None:
    solution = solve(with_options(PROBLEMS[name]))  # default options, no time limit
    m = solution.metrics()
    assert m.error is not None and m.error["y"].rel_l2 <= 1e-6
    assert m.outcome in (Outcome.CONVERGED, Outcome.BUDGET)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_public_problem_to_1e_6(name: str) -> None:
    m = solve(with_options(PROBLEMS[name])).metrics()  # default options, no time limit
    assert m.error is not None
    for unknown, err in m.error.items():
        assert err.rel_l2 <= 1e-6, (unknown, err)


CONDITION_CASES = {
    # name: (spec, exact)
    "dirichlet": (
        {"equations": ["y'' = -pi^2*sin(pi*x)"], "domain": [0, 1], "conditions": ["y(0) = 0", "y(1) = 0"]},
        lambda x: np.sin(np.pi * x),
    ),
    "neumann_robin": (PROBLEMS["neumann_robin"], lambda x: np.sin(np.pi * x)),
    "periodic": (
        {
            "equations": ["y'' - y = -5*cos(2*x)"],
            "domain": [0, "2*pi"],
            "conditions": ["y(0) = y(2*pi)", "y'(0) = y'(2*pi)"],
        },
        lambda x: np.cos(2 * x),
    ),
    "multipoint": (
        {"equations": ["y''' = 6"], "domain": [0, 2], "conditions": ["y(0) = 0", "y(1) = 1", "y(2) = 8"]},
        lambda x: x**3,
    ),
    "third_order_ivp": (
        {"equations": ["y''' = -y'"], "domain": [0, 3], "conditions": ["y(0) = 0", "y'(0) = 1", "y''(0) = 0"]},
        np.sin,
    ),
    "nonlinear_condition_penalty": ({"equations": ["y' = y"], "domain": [0, 1], "conditions": ["y(0)^3 = 1"]}, np.exp),
    # u = exp(x), v = exp(-x): both equations couple the unknowns nonlinearly.
    "coupled_nonlinear_system": (
        {"equations": ["u' = u^2*v", "v' = -u*v^2"], "domain": [0, 1], "conditions": ["u(0) = 1", "v(0) = 1"]},
        np.exp,
    ),
    "interior_condition": (
        {"equations": ["y' = 2*x"], "domain": [-1, 1], "conditions": ["y(0.5) = 0.25"]},
        lambda x: x**2,
    ),
}


@pytest.mark.parametrize("case", sorted(CONDITION_CASES))
def test_condition_types(case: str) -> None:
    spec, exact = CONDITION_CASES[case]
    solution = solve(with_options(spec, max_iterations=800))
    m = solution.metrics()
    xs = np.linspace(*solution.problem.domain, 301)
    err = np.abs(solution(xs)[:, 0] - exact(xs)).max()
    assert err < 1e-5, err
    if case == "coupled_nonlinear_system":
        assert np.abs(solution(xs)[:, 1] - np.exp(-xs)).max() < 1e-5
    hard = case != "nonlinear_condition_penalty"
    for name, e in m.conditions.items():
        assert e < (ROUNDING if hard else 1e-6), (name, e)
    assert (len(m.hard_conditions) == len(spec["conditions"])) == hard


def test_samples_shape_and_derivatives() -> None:
    spec = with_options(PROBLEMS["harmonic_system"], **FAST) | {"output": {"points": 11, "derivatives": 2}}
    solution = solve(spec)
    s = solution.samples()
    assert s.variable == "x" and len(s.x) == 11
    assert set(s.values) == {"u", "v"}
    assert set(s.derivatives) == {"u'", "v'", "u''", "v''"}
    assert set(s.residuals) == {"equations[0]", "equations[1]"}
    x = np.array(s.x)
    assert np.allclose(s.values["u"], np.sin(x), atol=1e-4)
    assert np.allclose(s.derivatives["u''"], -np.sin(x), atol=1e-3)
    assert max(abs(r) for r in s.residuals["equations[0]"]) < 1e-3


def test_deterministic_for_a_seed() -> None:
    spec = with_options(PROBLEMS["lagaris2"], max_iterations=300)
    a, b = solve(spec), solve(spec)
    assert np.array_equal(a.trial.theta.numpy(), b.trial.theta.numpy())
    c = solve(with_options(spec, seed=1))
    assert not np.array_equal(a.trial.theta.numpy(), c.trial.theta.numpy())


def test_outcomes_are_results() -> None:
    base = PROBLEMS["lagaris2"]
    steps: list = []
    s = solve(with_options(base, max_iterations=50), hooks=Hooks(on_step=steps.append))
    assert s.outcome is Outcome.BUDGET and "budget" in s.message
    assert [st.iteration for st in steps] == list(range(1, 51))
    assert [st.phase for st in steps] == ["adam"] * 50  # the first 100 iterations are Adam's
    assert all(st.loss > 0 and st.theta.shape == s.trial.theta.shape for st in steps)
    s = solve(with_options(NONLINEAR, max_iterations=10**6, time_limit_s=0.5))
    assert s.outcome is Outcome.TIME_LIMIT
    stop_after = iter(range(30, -1, -1))
    s = solve(with_options(base, max_iterations=10**6), hooks=Hooks(should_stop=lambda: next(stop_after) == 0))
    assert s.outcome is Outcome.CANCELED and s.result.iterations == 31
    assert math.isfinite(s.metrics().loss)
    s = solve({"equations": ["y' = log(x - 5)"], "domain": [0, 1], "conditions": ["y(0) = 0"]})
    assert s.outcome is Outcome.DIVERGED and "singular" in s.message
    s = solve(with_options(base, target_loss=1e-3))
    assert s.outcome is Outcome.CONVERGED


def test_float32_and_other_optimisers() -> None:
    base = PROBLEMS["lagaris2"]
    for opts in (
        {"precision": "float32"},
        {"optimizer": "lbfgs"},
        {"optimizer": "adam", "max_iterations": 400},
        {"network": {"width": 12, "depth": 1, "activation": "sin"}},
    ):
        s = solve(with_options(base, **({"max_iterations": 400} | opts)))
        assert s.metrics().error["y"].rel_l2 < 1e-2, opts


def test_large_domain_and_magnitude_are_scaled() -> None:
    spec = {
        "equations": ["y' = -y/20"],
        "domain": [0, 100],
        "conditions": ["y(0) = 1000"],
        "exact": {"y": "1000*exp(-x/20)"},
    }
    assert solve(with_options(spec, max_iterations=800)).metrics().error["y"].rel_l2 < 1e-6


def _interrupted_and_resumed(spec: dict, stop_at: int):
    import io

    import torch

    calls = iter(range(stop_at - 1, -1, -1))
    first = solve(spec, hooks=Hooks(should_stop=lambda: next(calls) == 0))
    assert first.outcome is Outcome.CANCELED and first.result.iterations == stop_at
    # The state survives serialisation with weights_only loading (what the worker stores).
    buf = io.BytesIO()
    torch.save(first.result.state, buf)
    return solve(spec, resume=torch.load(io.BytesIO(buf.getvalue()), weights_only=True))


@pytest.mark.parametrize(
    ("optimizer", "stop_at"),
    [("adam", 150), ("lm", 40), ("lm", 130), ("lm", 400), ("lbfgs", 40), ("lbfgs", 250)],
    ids=["adam", "lm-during-adam", "lm-output-layer-eliminated", "lm", "lbfgs-during-adam", "lbfgs"],
)
def test_resumed_training_matches_an_uninterrupted_run(optimizer: str, stop_at: int) -> None:
    import torch

    # No time limit in play: the machine may be busy; the budget decides. A linear problem's
    # steps eliminate its output layer (converged by ~200 iterations); plain steps, a nonlinear one's.
    base = PROBLEMS["harmonic_system"] if stop_at < 200 else NONLINEAR
    spec = with_options(base, max_iterations=500, optimizer=optimizer)
    straight = solve(spec)
    resumed = _interrupted_and_resumed(spec, stop_at)
    assert resumed.outcome is straight.outcome
    assert resumed.result.iterations == straight.result.iterations
    assert torch.allclose(resumed.trial.theta, straight.trial.theta, rtol=0, atol=1e-12)
    assert [h[0] for h in resumed.result.history] == [h[0] for h in straight.result.history]
    assert [h[1] for h in resumed.result.history] == pytest.approx([h[1] for h in straight.result.history], rel=1e-9)


def test_resume_keeps_the_levenberg_marquardt_stall_count() -> None:
    """Interrupted just before LM ends for lack of progress, the resumed run stops at the same
    iteration as the uninterrupted one (the stall count and the plateau window are part of the
    state)."""
    import torch

    spec = with_options(PROBLEMS["lagaris2"], max_iterations=20_000, target_loss=0.0)
    straight = solve(spec)
    assert straight.outcome is Outcome.CONVERGED and straight.result.iterations < 20_000
    resumed = _interrupted_and_resumed(spec, straight.result.iterations - 20)
    assert resumed.outcome is Outcome.CONVERGED
    assert resumed.result.iterations == straight.result.iterations
    assert torch.allclose(resumed.trial.theta, straight.trial.theta, rtol=0, atol=1e-12)


def test_periodic_checkpoints() -> None:
    states: list = []
    hooks = Hooks(checkpoint=states.append, checkpoint_every_s=0.0)
    solve(with_options(NONLINEAR, max_iterations=300), hooks=hooks)
    assert len(states) >= 250 and states[-1]["iteration"] > states[0]["iteration"]
    assert {"theta", "iteration", "elapsed", "best_loss", "history", "phase", "mu", "nu", "stalled"} <= set(states[-1])
    assert "adam" in states[0] and states[0]["phase"] == "adam"
