"""The ridge on a linear problem's output layer (odeserve.solver.ridge) and the converged runs'
short plateau window (odeserve.solver.train): rows, Jacobian, effect, and where a run stops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odeserve import load_problem, solve
from odeserve.examples import public_problems
from odeserve.network import output_layer
from odeserve.parametric import chebyshev_points
from odeserve.solver import ridge as ridge_module
from odeserve.solver.residual import Residual
from odeserve.solver.ridge import RIDGE, Ridged, ridged
from odeserve.solver.solve import DTYPES, _residual, build_trial, equation_scales
from odeserve.solver.sweep import batch_residual
from tests.problems import NONLINEAR, with_options


def _built(spec: dict) -> tuple[Residual | Ridged, torch.Tensor]:
    problem = load_problem(spec)
    trial, plan, scales = build_trial(problem, torch.device("cpu"), DTYPES["float64"])
    xs = chebyshev_points(*problem.domain, 24)
    residual = _residual(problem, trial, plan, xs, equation_scales(problem, scales))
    theta = trial.theta.detach() + 0.1 * torch.randn(trial.theta.shape, dtype=torch.float64)
    return residual, theta


def test_a_linear_problems_residual_ends_with_its_output_layers_ridge_rows() -> None:
    residual, theta = _built(public_problems()["lagaris3_ivp"])
    assert isinstance(residual, Ridged)
    out = residual.linear_columns
    width = out.stop - out.start
    plain = residual.residual
    r, J = residual.jacobian(theta)
    r0, J0 = plain.jacobian(theta)
    assert r.shape == (residual.rows,) == (plain.rows + width,)
    assert torch.equal(r[:-width], r0) and torch.equal(J[:-width], J0)
    assert torch.equal(r[-width:], RIDGE * theta[out])
    expected = torch.zeros(width, theta.numel(), dtype=theta.dtype)
    expected[:, out] = RIDGE * torch.eye(width, dtype=theta.dtype)
    assert torch.equal(J[-width:], expected)
    # The plain forward pass rounds as the Jacobian's pass does, to the last bits on some CPUs
    # (equal on the Intel Xeon, not on the AMD EPYC).
    assert torch.allclose(residual(theta), r, rtol=1e-13, atol=1e-15)
    # A trial step's shortcut (the rows from one forward pass, the Jacobian on demand) agrees.
    lin = residual.linearized(theta)
    assert lin is not None
    assert torch.equal(lin[0], r)
    r1, J1 = lin[1]()
    assert torch.allclose(r1, r, rtol=0, atol=1e-15) and torch.allclose(J1, J, rtol=1e-12, atol=1e-15)


def test_a_nonlinear_problem_has_no_ridge() -> None:
    residual, _ = _built(NONLINEAR)
    assert isinstance(residual, Residual) and residual.linear_columns is None and not ridged(residual)


def test_a_parametric_surrogate_has_no_ridge_and_keeps_the_long_window() -> None:
    """A parametric model is linear too, but unridged: its steps creep on usefully below the stall
    loss (found by a review: the short window left a decay surrogate 18x less accurate)."""
    spec = {**public_problems()["decay_t"], "parameters": {"k": {"range": [0.25, 1.0]}}}
    spec.pop("exact", None)
    residual, _ = _built(spec)
    assert isinstance(residual, Residual) and residual.linear_columns is not None and not ridged(residual)


def test_a_linear_network_without_hidden_layers_still_solves() -> None:
    """depth 0: the output layer is every weight, and the projected step has no hidden block
    (found by a review: the inner system without the output columns had no columns at all)."""
    s = solve(
        {"equations": ["y' = 1"], "domain": [0, 1], "conditions": ["y(0) = 0"], "options": {"network": {"depth": 0}}}
    )
    assert s.outcome.value == "converged", s.message
    error = s.metrics().error
    assert error is None or all(e.rel_l2 < 1e-12 for e in error.values())
    x = np.linspace(0.0, 1.0, 11)
    assert np.allclose(s(x)[:, 0], x, atol=1e-12)


def test_a_sweeps_batched_rows_end_with_each_members_ridge_rows() -> None:
    spec = public_problems()["decay_t"] | {"sweep": {"k": [0.5, 1.0]}}
    spec.pop("exact", None)
    sweep, trial, _ = batch_residual(load_problem(spec), torch.device("cpu"))
    out = output_layer(trial.sizes)
    width = out.stop - out.start
    thetas = trial.theta.detach().expand(2, -1) + 0.1 * torch.randn(2, trial.theta.numel(), dtype=torch.float64)
    members = torch.arange(2)
    r, J = sweep.jacobian(thetas, members)
    assert r.shape == (2, sweep.rows) and J.shape == (2, sweep.rows, thetas.shape[1])
    assert torch.equal(r[:, -width:], RIDGE * thetas[:, out])
    assert torch.equal(sweep(thetas, members), r)
    assert torch.equal(J[:, -width:, out], RIDGE * torch.eye(width, dtype=torch.float64).expand(2, -1, -1))
    assert float(J[:, -width:, : out.start].abs().max()) == 0.0


@pytest.mark.parametrize("name", ["decay_t", "lagaris1"])
def test_the_ridge_keeps_the_output_layer_small_and_the_solution_at_rounding(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the ridge, the output layer of these default solves is large and cancelling
    (1e4 to 7e4) and the network's rounding limits the error (4e-12 to 6e-12); with it, weights
    a hundred times smaller or more and errors under 1e-13 (seed 0)."""
    spec = public_problems()[name] | {"options": {"escalate": False}}

    def solved() -> tuple[float, float]:
        s = solve(spec)
        error = s.metrics().error
        assert error is not None
        return float(s.trial.theta[output_layer(s.trial.sizes)].abs().max()), max(e.rel_l2 for e in error.values())

    weights, err = solved()
    monkeypatch.setattr(ridge_module, "RIDGE", 0.0)
    plain_weights, plain_err = solved()
    assert weights < plain_weights / 100 and plain_weights > 1e3, (weights, plain_weights)
    assert err < 1e-13 and err < plain_err / 10, (err, plain_err)


def _last_gain(history: list[tuple[int, float, float]], adam: int) -> int:
    """The iteration of the second-order phase's last factor-2 gain of the best loss, as the
    plateau rule counts it."""
    best, plateau, since = math.inf, math.inf, adam
    for it, loss, _ in history:
        best = min(best, loss)
        if it > adam and best * 2.0 <= plateau:
            plateau, since = best, it
    return since


def test_a_converged_run_stops_a_short_window_after_its_last_gain() -> None:
    """No target to reach: a linear problem's run ends 25 iterations after its last factor-2 gain,
    where the patience rule ran on for 50 to 90 (every step that rounding noise let through reset
    it)."""
    from odeserve.hooks import Hooks
    from odeserve.solver.train import _CONVERGED_WINDOW, _PLATEAU_WINDOW, STALL_LOSS, _Run
    from odeserve.spec import Options

    s = solve(with_options(public_problems()["decay_t"], target_loss=0.0, escalate=False))
    assert s.outcome.value == "converged", s.message
    assert f"over the last {_CONVERGED_WINDOW} iterations" in s.message
    history = s.result.history
    assert s.result.iterations - _last_gain(history, s.problem.options.adam_iterations) == _CONVERGED_WINDOW
    assert s.result.loss <= STALL_LOSS
    # Above the stall loss, for L-BFGS and for a nonlinear problem's plain steps (which creep on
    # usefully there), the long window still holds.
    run = _Run(Options(), Hooks(), None, STALL_LOSS)
    run.best_loss, run.ridged = 1e-12, True
    assert run._window("lm") == _CONVERGED_WINDOW and run._window("lbfgs") == _PLATEAU_WINDOW
    run.best_loss = 1e-8
    assert run._window("lm") == _PLATEAU_WINDOW
    run.best_loss, run.ridged = 1e-12, False
    assert run._window("lm") == _PLATEAU_WINDOW
