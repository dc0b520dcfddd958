"""Inverse problems: parameters estimated from data with honest uncertainty, checked against
known values and against the classical baseline (scipy least_squares over solve_ivp)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from odeserve import SpecError, load_problem, solve
from odeserve.errors import IllPosedError
from tests.problems import with_options

K = 1.3
XS = np.linspace(0.0, 2.0, 20)


def decay(values: np.ndarray, *, sigma: float | None = None, condition: bool = True, **options: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"unknown": "y", "x": XS.tolist(), "values": values.tolist()}
    if sigma is not None:
        data["sigma"] = sigma
    spec = {
        "equations": ["y' = -k*y"],
        "domain": [0, 2],
        "conditions": ["y(0) = 1"] if condition else [],
        "unknown_parameters": {"k": {"initial": 0.5, "bounds": [0, 10]}},
        "data": [data],
    }
    return with_options(spec, **options)


def noisy(seed: int, sigma: float) -> np.ndarray:
    return np.exp(-K * XS) + sigma * np.random.default_rng(seed).standard_normal(XS.size)


def test_noise_free_decay_rate_to_1e_6() -> None:
    s = solve(decay(np.exp(-K * XS), max_iterations=1000))
    k = s.metrics().parameters["k"]
    assert abs(k.value - K) / K <= 1e-6
    # Without sigmas, the deviation comes from the residuals: here the network's own error.
    assert k.identifiable and k.std_error is not None and k.std_error < 1e-6
    assert s.metrics().data_fit.noise == "estimated"
    assert s.parameter_values["k"] == k.value


def test_noisy_decay_rate_matches_the_classical_least_squares_fit() -> None:
    """With 1% noise, the estimate and its standard error agree with scipy's least_squares over
    the exact model (the classical baseline), and the interval holds the true value."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import least_squares

    sigma = 0.01
    values = noisy(1, sigma)
    m = solve(decay(values, sigma=sigma)).metrics()
    k = m.parameters["k"]

    def misfit(p: np.ndarray) -> np.ndarray:
        sol = solve_ivp(lambda x, y: -p[0] * y, (0, 2), [1.0], t_eval=XS, rtol=1e-12, atol=1e-14)
        return (sol.y[0] - values) / sigma

    ls = least_squares(misfit, [0.5])
    se_ls = float(np.sqrt(np.linalg.inv(ls.jac.T @ ls.jac))[0, 0])
    assert abs(k.value - ls.x[0]) <= 0.05 * se_ls
    assert k.std_error == pytest.approx(se_ls, rel=0.1)
    assert k.ci95[0] <= K <= k.ci95[1]
    assert m.estimate is not None and m.estimate.method == "classical"  # the forward problem, k fixed
    fit = m.data_fit
    assert fit.noise == "given" and fit.dof == 19 and 0.2 < fit.reduced_chi2 < 3.0
    assert len(fit.sets[0].residuals) == 20 and fit.sets[0].rms == pytest.approx(sigma, rel=0.5)


def test_data_stand_in_for_a_missing_condition() -> None:
    """No y(0) = 1: the data pin down both the start value and the rate."""
    s = solve(decay(np.exp(-K * XS), condition=False, max_iterations=1000))
    k = s.metrics().parameters["k"]
    assert abs(k.value - K) / K <= 1e-4
    assert abs(s([0.0])[0, 0] - 1.0) <= 1e-4
    m = s.metrics()
    assert m.estimate is not None and m.estimate.method == "none" and m.accuracy.met is None


def test_a_flat_direction_is_reported_not_hidden() -> None:
    """y' = -a*b*y determines only the product a*b: neither factor is identifiable."""
    spec = decay(np.exp(-K * XS), max_iterations=400)
    spec["equations"] = ["y' = -a*b*y"]
    spec["unknown_parameters"] = {"a": {"initial": 0.5}, "b": {"initial": 2.0}}
    s = solve(spec)
    params = s.metrics().parameters
    assert params["a"].value * params["b"].value == pytest.approx(K, rel=1e-4)
    for name, other in (("a", "b"), ("b", "a")):
        p = params[name]
        assert not p.identifiable and p.std_error is None and p.ci95 is None
        assert f"'{other}'" in p.message


def test_unknown_parameter_in_a_condition_and_measured_derivative() -> None:
    """A parameter may appear in a condition (it becomes a penalty) and data may measure y'."""
    spec = with_options(
        {
            "equations": ["y' = -0.5*y"],
            "domain": [0, 2],
            "conditions": ["y(0) = y0"],
            "unknown_parameters": {"y0": {"initial": 1.0}},
            "data": [
                {"unknown": "y", "order": 1, "x": XS.tolist(), "values": (-0.5 * 3.0 * np.exp(-0.5 * XS)).tolist()}
            ],
        },
        max_iterations=600,
    )
    s = solve(spec)
    assert s.metrics().parameters["y0"].value == pytest.approx(3.0, rel=1e-5)
    assert s.plan.penalty == (0,)


def test_estimates_travel_with_the_exported_model() -> None:
    import torch

    s = solve(decay(np.exp(-K * XS), max_iterations=100))
    extra = {"metadata.json": ""}
    torch.jit.load(io.BytesIO(s.torchscript_bytes()), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["parameters"]["k"] == s.parameter_values["k"]
    assert meta["estimated_parameters"]["k"]["identifiable"] is True


BASE = {
    "equations": ["y' = -k*y"],
    "domain": [0, 2],
    "conditions": ["y(0) = 1"],
    "unknown_parameters": {"k": {"initial": 0.5}},
    "data": [{"unknown": "y", "x": [0.5, 1.0, 1.5], "values": [0.5, 0.3, 0.1]}],
}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"data": []}, IllPosedError, "data: unknown parameters can only be estimated from data"),
        ({"data": [{"unknown": "z", "x": [1], "values": [1]}]}, SpecError, "data[0].unknown: 'z' is not an unknown"),
        ({"data": [{"unknown": "y", "x": [1, 3], "values": [1, 2]}]}, SpecError, "data[0].x[1]: point 3 is outside"),
        ({"data": [{"unknown": "y", "x": [1, 2], "values": [1]}]}, SpecError, "values has 1 entries but x has 2"),
        (
            {"data": [{"unknown": "y", "x": [1, 2], "values": [1, 2], "sigma": [0.1]}]},
            SpecError,
            "sigma has 1 entries but x has 2",
        ),
        ({"data": [{"unknown": "y", "x": [1], "values": [1], "sigma": 0}]}, SpecError, "data[0].sigma"),
        ({"data": [{"unknown": "y", "x": [1], "values": [1], "order": 2}]}, SpecError, "data[0].order: 'y' appears"),
        (
            {"data": [{"unknown": "y", "x": [1], "values": [1]}], "conditions": []},
            IllPosedError,
            "data: 1 data point(s) cannot determine the solution: 1 missing condition(s) and 1 unknown parameter(s) "
            "need at least 2 points",
        ),
        (
            {
                "conditions": [],
                "equations": ["y' = -k*y + c"],
                "unknown_parameters": {"k": {"initial": 1}, "c": {"initial": 1}},
                "data": [{"unknown": "y", "x": [0.5, 1.0], "values": [0.5, 0.3]}],
            },
            IllPosedError,
            "data: 2 data point(s) cannot determine the solution: 1 missing condition(s) and 2 unknown parameter(s) "
            "need at least 3 points",
        ),
        (
            {"conditions": ["y(0) = 1", "y(1) = 2"]},
            IllPosedError,
            "conditions: 2 condition(s) given, but the problem needs at most 1",
        ),
        (
            {"unknown_parameters": {"k": {"initial": 5, "bounds": [0, 1]}}},
            SpecError,
            "unknown_parameters.k: value error, initial 5",
        ),
        ({"unknown_parameters": {"k": {"initial": 0.5, "bounds": [1, 0]}}}, SpecError, "bounds need lower < upper"),
        ({"unknown_parameters": {"k": {"initial": 1}}, "parameters": {"k": 1}}, SpecError, "also a known parameter"),
        ({"unknown_parameters": {"sin": {"initial": 1}}}, SpecError, "unknown_parameters.sin"),
        (
            {"unknown_parameters": {"k": {"initial": 1}, "c": {"initial": 1}}},
            SpecError,
            "unknown_parameters.c: 'c' appears in no equation or condition",
        ),
        ({"domain": [0, "2*k"]}, SpecError, "domain[1]: parameter 'k' is estimated from the data"),
        ({"conditions": ["y(k) = 1"]}, SpecError, "conditions[0]: parameter 'k' is estimated from the data"),
    ],
)
def test_bad_inverse_specs_name_the_field(changes: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        load_problem({**BASE, **changes})
    assert message in str(info.value)


def test_an_inverse_job_over_http_reports_its_estimates(service) -> None:
    """Through the real stack: the job's metrics carry the estimate and the fit."""
    from tests.test_service import finish

    spec = decay(noisy(3, 0.01), sigma=0.01, max_iterations=400)
    r = service.post("/solve", json=spec)
    assert r.status_code == 202, r.text
    job = finish(service, r.json()["id"])
    assert job["status"] == "succeeded", job
    k = job["metrics"]["parameters"]["k"]
    assert k["identifiable"] and k["ci95"][0] < k["value"] < k["ci95"][1]
    assert abs(k["value"] - K) <= 4 * k["std_error"]
    assert job["metrics"]["data_fit"]["noise"] == "given" and len(job["metrics"]["data_fit"]["sets"]) == 1
    bad = service.post("/solve", json={**spec, "data": [{"unknown": "z", "x": [1], "values": [1]}]})
    assert bad.status_code == 422 and "data[0].unknown" in bad.text


def test_identifiability_does_not_depend_on_the_datas_units() -> None:
    """Well-determined but correlated parameters whose information is tiny next to the equations'
    (data without sigma) are identifiable; a product a*b is not, at any scale."""
    import torch

    from odeserve.solver.uncertainty import _covariance

    corr = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
    scale = torch.tensor([1e-3, 2e-2, 5e-4], dtype=torch.float64)
    F = corr * scale.unsqueeze(0) * scale.unsqueeze(1)
    for ref in (1.0, 1e3):  # the equations' scale: F's diagonal is 2.5e-7..4e-4 of it, or 2.5e-10..4e-7
        cov, weak = _covariance(F, ref)
        assert not bool(weak.any())
        assert torch.allclose(cov, torch.linalg.inv(F), rtol=1e-8)
    g = torch.tensor([[2.0], [1.0]], dtype=torch.float64)  # y' = -a*b*y: one direction only
    cov, weak = _covariance(g @ g.T * 1e-6, 1.0)
    assert bool(weak.all())
