"""Taylor-mode derivatives against nested autograd, and derivative() on awkward functions."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from odeserve import derivative
from odeserve.network import parameter_count
from odeserve.solver.taylor import SIN, TANH, mlp_taylor


def nested_autograd(theta, sizes, t, dt, order, activation):
    """The textbook approach: build the MLP with autograd and differentiate repeatedly."""
    x = t.clone().requires_grad_(True)

    def net(xx):
        h = xx.unsqueeze(1)
        off = 0
        for i in range(len(sizes) - 1):
            w = theta[off : off + sizes[i] * sizes[i + 1]].view(sizes[i + 1], sizes[i])
            off += sizes[i] * sizes[i + 1]
            b = theta[off : off + sizes[i + 1]]
            off += sizes[i + 1]
            h = h @ w.t() + b
            if i < len(sizes) - 2:
                h = torch.tanh(h) if activation == TANH else torch.sin(h)
        return h

    outs = [net(x)]
    for _ in range(order):
        cols = []
        for j in range(sizes[-1]):
            (g,) = torch.autograd.grad(outs[-1][:, j].sum(), x, create_graph=True, allow_unused=True)
            cols.append(torch.zeros_like(x) if g is None else g)
        outs.append(torch.stack(cols, 1))
    # Input scaling: t = (x - mid)/half was applied outside, so d/dx = dt * d/dt.
    return [o.detach() * dt**k for k, o in enumerate(outs)]


@pytest.mark.parametrize("activation", [TANH, SIN])
@pytest.mark.parametrize("sizes", [[1, 7, 2], [1, 9, 9, 1], [1, 5, 6, 4, 3]])
def test_taylor_mode_matches_nested_autograd(sizes, activation) -> None:
    gen = torch.Generator().manual_seed(sum(sizes) + activation)
    theta = torch.randn(parameter_count(sizes), generator=gen, dtype=torch.float64)
    t = torch.linspace(-1, 1, 41, dtype=torch.float64)
    got = mlp_taylor(theta, sizes, t, torch.tensor(0.7, dtype=torch.float64), 4, activation)
    want = nested_autograd(theta, sizes, t, 0.7, 4, activation)
    for k in range(5):
        assert torch.allclose(got[k], want[k], rtol=1e-12, atol=1e-12), f"order {k}"


def test_per_point_weights_give_the_jacobian() -> None:
    sizes = [1, 6, 6, 2]
    theta = torch.randn(parameter_count(sizes), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.linspace(-1, 1, 9, dtype=torch.float64)
    rows = theta.expand(9, -1).clone().requires_grad_(True)
    out = mlp_taylor(rows, sizes, t, torch.tensor(1.0, dtype=torch.float64), 2, TANH)[2][:, 0]
    (J,) = torch.autograd.grad(out.sum(), rows)
    J_ref = torch.func.jacrev(
        lambda th: mlp_taylor(th, sizes, t, torch.tensor(1.0, dtype=torch.float64), 2, TANH)[2][:, 0]
    )(theta)
    assert torch.allclose(J, J_ref, rtol=1e-12, atol=1e-13)


def test_linear_network_has_exact_zero_higher_derivatives() -> None:
    sizes = [1, 3]  # depth 0: an affine map
    theta = torch.tensor([0.5, -2.0, 3.0, 0.1, 0.2, 0.3], dtype=torch.float64)
    t = torch.linspace(-1, 1, 5, dtype=torch.float64)
    y, d1, d2, d3, d4 = mlp_taylor(theta, sizes, t, torch.tensor(2.0, dtype=torch.float64), 4, TANH)
    assert torch.equal(d1, torch.tensor([[1.0, -4.0, 6.0]], dtype=torch.float64).expand(5, 3))
    for d in (d2, d3, d4):
        assert torch.equal(d, torch.zeros(5, 3, dtype=torch.float64))


def test_derivative_function_never_fails_on_unused_inputs() -> None:
    x = torch.linspace(0, 1, 6, dtype=torch.float64).reshape(-1, 1)
    linear = torch.nn.Linear(1, 2).double()
    assert torch.equal(derivative(linear, 2)(x), torch.zeros(6, 2, dtype=torch.float64))
    assert torch.allclose(derivative(linear, 1)(x), linear.weight.detach().t().expand(6, 2))
    constant = derivative(lambda v: torch.ones_like(v) * 3.0, 1)(x)
    assert torch.equal(constant, torch.zeros_like(x))
    cubic = derivative(lambda v: v**3, 2)(x.reshape(-1))
    assert torch.allclose(cubic, 6 * x.reshape(-1))
    assert torch.equal(derivative(lambda v: v**3, 4)(x), torch.zeros_like(x))
    with pytest.raises(ValueError):
        derivative(linear, 5)


JACOBIAN_CASES = {
    "first-order IVP": {"equations": ["y' = -2*x*y"], "domain": [0, 1], "conditions": ["y(0) = 1"]},
    "two-point BVP": {"equations": ["y'' + y = x"], "domain": [0, 2], "conditions": ["y(0) = 0", "y'(2) = 1"]},
    "system": {
        "equations": ["u' = v", "v' = -u + sin(x)"],
        "domain": [0, 3],
        "conditions": ["u(0) = 0", "v(0) = 1"],
    },
    "penalty (nonlinear) condition": {
        "equations": ["y'' = -y"],
        "domain": [0, 1],
        "conditions": ["y(0) = 1", "y(1)^2 + y'(1) = 0.5"],
    },
    "soft constraints": {
        "equations": ["y' = y"],
        "domain": [0, 1],
        "conditions": ["y(0) = 1"],
        "options": {"hard_constraints": False},
    },
    "fourth order, sine, three hidden layers": {
        "equations": ["y'''' = y*cos(x) - y''"],
        "domain": [0, 2],
        "conditions": ["y(0) = 1", "y'(0) = 0", "y(2) = 0", "y''(2) = 1"],
        "options": {"network": {"activation": "sin", "depth": 3, "width": 7}},
    },
    "affine network (no hidden layer)": {
        "equations": ["y'' = x*y'"],
        "domain": [-1, 1],
        "conditions": ["y(-1) = 0", "y(1) = 1"],
        "options": {"network": {"depth": 0}, "hard_constraints": False},
    },
    "Robin condition (two keys at one point), first-order key of a second-order equation": {
        "equations": ["y'' = -pi^2*sin(pi*x)"],
        "domain": [0, 1],
        "conditions": ["y'(0) = pi", "y'(1) + y(1) = -pi"],
    },
    "affine network with hard constraints": {
        "equations": ["y' = x"],
        "domain": [0, 1],
        "conditions": ["y(0) = 1"],
        "options": {"network": {"depth": 0}},
    },
    "inverse (data, unknown parameter)": {
        "equations": ["y' = -k*y"],
        "domain": [0, 1],
        "conditions": ["y(0) = 1"],
        "unknown_parameters": {"k": {"initial": 0.5}},
        "data": [{"unknown": "y", "x": [0.25, 0.5, 1.0], "values": [0.78, 0.61, 0.37]}],
    },
}


def _case(name: str, seed: int) -> tuple[Any, torch.Tensor]:
    """The residual of a :data:`JACOBIAN_CASES` problem on 11 points, and weights near the
    initial ones (with the raw unknown parameters for an inverse problem)."""
    import numpy as np

    from odeserve.problem import load_problem
    from odeserve.solver.inverse import DataRows, ParameterMap
    from odeserve.solver.residual import Residual
    from odeserve.solver.solve import build_trial, equation_scales

    problem = load_problem(JACOBIAN_CASES[name] | {"options": JACOBIAN_CASES[name].get("options", {})})
    trial, plan, scales = build_trial(problem, torch.device("cpu"), torch.float64)
    x = torch.as_tensor(np.linspace(*problem.domain, 11), dtype=torch.float64)
    params = data = None
    theta = trial.theta.detach().clone()
    if problem.is_inverse:
        params = ParameterMap.of(problem, trial.theta.numel())
        data = DataRows(problem, trial, scales, trial.theta)
        theta = torch.cat([theta, torch.tensor(params.raw_initial(problem), dtype=torch.float64)])
    residual = Residual(problem, trial, plan, x, equation_scales(problem, scales), params, data)
    gen = torch.Generator().manual_seed(seed)
    return residual, theta + 0.1 * torch.randn(theta.shape, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("name", list(JACOBIAN_CASES))
def test_the_one_pass_jacobian_matches_autograd(name: str) -> None:
    """The LM phase's Jacobian (outer products of the taped layers' inputs and backward signals,
    or per-point weight copies for inverse problems; the constraint coefficients by the chain
    rule) against torch's own, on every kind of residual row."""
    residual, theta = _case(name, 1)
    r, J = residual.jacobian(theta)
    assert torch.allclose(r, residual(theta), rtol=1e-13, atol=1e-13)
    J_ref = torch.autograd.functional.jacobian(residual, theta)
    assert J.shape == J_ref.shape
    assert torch.allclose(J, J_ref, rtol=1e-10, atol=1e-12), (J - J_ref).abs().max()


@pytest.mark.parametrize("name", list(JACOBIAN_CASES))
def test_a_trial_steps_jacobian_comes_from_its_own_forward_pass(name: str) -> None:
    """Levenberg-Marquardt evaluates a trial step and wants its Jacobian only if it is accepted:
    ``linearized`` gives the residual now and (r, J) later from the same forward pass, equal to
    ``__call__`` and ``jacobian``; residuals with penalty, data or parameter rows have no such
    shortcut (None), and the step uses ``jacobian``."""
    residual, theta = _case(name, 2)
    lin = residual.linearized(theta)
    if residual.penalty or residual.params is not None:
        assert lin is None
        return
    assert lin is not None
    r, later = lin
    assert not r.requires_grad and torch.allclose(r, residual(theta), rtol=1e-13, atol=1e-13)
    r2, J = later()
    r_ref, J_ref = residual.jacobian(theta)
    assert torch.equal(r2, r) and not J.requires_grad
    assert torch.allclose(J, J_ref, rtol=1e-12, atol=1e-14), (J - J_ref).abs().max()


@pytest.mark.parametrize("name", ["system", "two-point BVP"])
def test_the_warm_start_fit_jacobian_matches_autograd(name: str) -> None:
    """The warm start's data-fit residual (order 0, hard constraints) takes the same taped path,
    also where a constraint key is a derivative (the taped pass then runs to the keys' order,
    above the residual's)."""
    import numpy as np

    from odeserve.problem import load_problem
    from odeserve.solver.marching import FitResidual
    from odeserve.solver.solve import build_trial

    problem = load_problem(JACOBIAN_CASES[name])
    trial, plan, scales = build_trial(problem, torch.device("cpu"), torch.float64)
    assert (name == "system") == (max(plan.key_order) == 0)
    xs = np.linspace(*problem.domain, 9)
    x = torch.as_tensor(xs, dtype=torch.float64)
    target = np.stack([np.sin(xs), np.cos(xs)][: len(problem.unknowns)], 1)
    fit = FitResidual(problem, trial, plan, x, scales, target)
    theta = trial.theta.detach() + 0.1 * torch.randn(trial.theta.shape, dtype=torch.float64)
    r, J = fit.jacobian(theta)
    assert torch.allclose(r, fit(theta), rtol=1e-13, atol=1e-13)
    assert torch.allclose(J, torch.autograd.functional.jacobian(fit, theta), rtol=1e-10, atol=1e-12)


def test_the_jacobian_carries_no_graph() -> None:
    """The LM phase multiplies J on: a J that required grad would record every product."""
    from odeserve.problem import load_problem
    from odeserve.solver.residual import Residual
    from odeserve.solver.solve import build_trial, equation_scales

    for spec in (JACOBIAN_CASES["two-point BVP"], JACOBIAN_CASES["soft constraints"]):
        problem = load_problem(spec)
        trial, plan, scales = build_trial(problem, torch.device("cpu"), torch.float64)
        x = torch.linspace(*problem.domain, 7, dtype=torch.float64)
        r, J = Residual(problem, trial, plan, x, equation_scales(problem, scales)).jacobian(trial.theta)
        assert not r.requires_grad and not J.requires_grad
