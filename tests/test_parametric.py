"""Parametric surrogates: ranged parameters as network inputs, trained over the whole range and
checked against exact solutions across it (off the training grid), exported with (N, 1 + P)
inputs, sampled at chosen values, and refused with a 422 naming the field when misused."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from odeserve import SpecError, load_problem, solve
from odeserve.solver.solution import Solution
from tests.problems import with_options

DECAY = {
    "equations": ["y' = -k*y"],
    "domain": [0, 2],
    "conditions": ["y(0) = 1"],
    "parameters": {"k": {"range": [0.5, 2.0]}},
    "exact": {"y": "exp(-k*x)"},
    "output": {"points": 11, "parameters": {"k": [0.5, 1.0, 2.0]}},
}
XS = np.linspace(0.0, 2.0, 201)


@pytest.fixture(scope="module")
def family() -> Solution:
    return solve(with_options(DECAY, max_iterations=1000, escalate=False))


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_the_family_matches_the_exact_solutions_across_the_range(family: Solution) -> None:
    # 25 values, most of them between the 16 training values of k.
    errors = [rel_l2(family(XS, 0, {"k": k})[:, 0], np.exp(-k * XS)) for k in np.linspace(0.5, 2.0, 25)]
    assert max(errors) <= 1e-5, errors
    slopes = [rel_l2(family(XS, 1, {"k": k})[:, 0], -k * np.exp(-k * XS)) for k in (0.5, 1.1, 2.0)]
    assert max(slopes) <= 1e-4, slopes


def test_metrics_and_estimate_cover_the_range(family: Solution) -> None:
    m = family.metrics()
    true = m.error["y"].rel_l2 if m.error else None
    assert true is not None and true <= 1e-5
    est = m.estimate
    assert est is not None and est.method == "classical" and est.rel_l2 is not None
    assert true / 10 <= est.rel_l2 <= max(10 * true, 1e-12)  # within 10x (or pessimistic)
    assert "5 parameter values" in (est.note or "") and "k in [0.5, 2]" in (est.note or "")
    assert m.accuracy is not None and m.accuracy.met is True


def test_samples_at_the_chosen_values_one_block_each(family: Solution) -> None:
    from service.samples_csv import to_csv

    s = family.samples()
    assert s.parameters == {"k": [0.5] * 11 + [1.0] * 11 + [2.0] * 11}
    assert len(s.x) == 33 and s.x[:11] == s.x[11:22]
    y = np.array(s.values["y"])
    want = np.exp(-np.array(s.parameters["k"]) * np.array(s.x))
    assert rel_l2(y, want) <= 1e-5
    header = to_csv(s).splitlines()[0].split(",")
    assert header[:3] == ["x", "k", "y"]


def test_exports_take_the_variable_then_the_parameters(family: Solution) -> None:
    import torch

    extra = {"metadata.json": ""}
    scripted = torch.jit.load(io.BytesIO(family.torchscript_bytes()), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["inputs"] == ["x", "k"] and meta["parameter_ranges"] == {"k": [0.5, 2.0]}
    exported = torch.export.load(io.BytesIO(family.export_bytes())).module()
    x = np.array([0.0, 0.3, 1.7, 2.0])
    k = np.array([0.5, 0.9, 1.6, 2.0])
    inputs = torch.tensor(np.stack([x, k], 1), dtype=torch.float64)
    want = np.exp(-k * x)
    for model in (scripted, exported):
        assert np.allclose(model(inputs).numpy()[:, 0], want, rtol=1e-5, atol=1e-6)
    # derivative(x, order) differentiates in the variable, not in the parameters.
    assert np.allclose(scripted.derivative(inputs, 1).numpy()[:, 0], -k * want, rtol=1e-4, atol=1e-5)


def test_a_condition_with_a_ranged_parameter_holds_across_the_range() -> None:
    spec = {
        "equations": ["y' = -y"],
        "domain": [0, 2],
        "conditions": ["y(0) = a"],
        "parameters": {"a": {"range": [1, 3]}},
        "exact": {"y": "a*exp(-x)"},
    }
    s = solve(with_options(spec, max_iterations=400, escalate=False))
    m = s.metrics()
    assert m.hard_conditions == [] and any("penalties" in n for n in m.notes)
    assert m.error is not None and m.error["y"].rel_l2 is not None and m.error["y"].rel_l2 <= 1e-4
    assert m.conditions["conditions[0]"] is not None and m.conditions["conditions[0]"] <= 1e-4


def test_a_parametric_model_refuses_values_outside_its_range(family: Solution) -> None:
    with pytest.raises(ValueError, match=r"k = 3 is outside the range \[0.5, 2\]"):
        family(XS, 0, {"k": 3.0})


def test_a_plain_problem_is_unchanged_by_the_parametric_path() -> None:
    s = solve(with_options({"equations": ["y' = -y"], "domain": [0, 1], "conditions": ["y(0) = 1"]}, max_iterations=50))
    assert s.samples().parameters is None
    assert s.metadata()["inputs"] == ["x"] and s.metadata()["parameter_ranges"] == {}
    with pytest.raises(ValueError, match="give a value for each parameter with a range"):
        s(XS, 0, {"k": 1.0})


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"parameters": {"k": {"range": [2, 1]}}}, SpecError, "parameters.k: value error, range needs lower < upper"),
        ({"parameters": {"k": {"rnge": [1, 2]}}}, SpecError, "parameters.k.range: field required"),
        ({"parameters": {"k": "one"}}, SpecError, "parameters.k: input should be a valid number"),
        ({"parameters": {"k": {"range": [1e308, 1.7e308]}}}, SpecError, "parameters.k: value error, range: the width"),
        ({"parameters": {"k": {"range": [0, 5e-324]}}}, SpecError, "is too small to resolve"),
        (
            {"data": [{"unknown": "y", "x": [1], "values": [0.5]}], "conditions": []},
            SpecError,
            "parameters.k: a parameter with a range (a parametric model) cannot be combined with data",
        ),
        ({"output": {"parameters": {"z": [1]}}}, SpecError, "output.parameters.z: 'z' is not a parameter with a range"),
        ({"output": {"parameters": {"k": [1, 3]}}}, SpecError, "output.parameters.k[1]: 3 is outside the range"),
        ({"output": {"parameters": {"k": []}}}, SpecError, "output.parameters: value error, 'k' needs 1 to 100 values"),
        (
            {"parameters": {"k": 1.0}, "output": {"parameters": {"k": [1]}}},
            SpecError,
            "output.parameters: only parameters with a range can be sampled",
        ),
        (
            {"parameters": {"k": {"range": [0.5, 2]}, "c": {"range": [0, 1]}}},
            SpecError,
            "parameters.c: 'c' has a range but appears in no equation or condition",
        ),
        ({"domain": [0, "2*k"]}, SpecError, "domain[1]: parameter 'k' has a range or is swept"),
        ({"conditions": ["y(k) = 1"]}, SpecError, "conditions[0]: parameter 'k' has a range or is swept"),
        (
            {
                "equations": ["y' = -k*y*a*b*c"],
                "parameters": {n: {"range": [1, 2]} for n in "kabc"},
            },
            SpecError,
            "parameters: value error, at most 3 parameters with a range",
        ),
        (
            {"output": {"points": 1001, "parameters": {"k": [float(v) for v in np.linspace(0.5, 2, 100)]}}},
            SpecError,
            "output.parameters: 100 combinations of parameter values at 1001 points each exceed the limits",
        ),
    ],
)
def test_bad_parametric_specs_name_the_field(changes: dict[str, Any], error: type, message: str) -> None:
    spec = {k: v for k, v in DECAY.items() if k != "output"}
    with pytest.raises(error) as info:
        load_problem({**spec, **changes})
    assert message in str(info.value)


def test_a_parametric_job_over_http(service) -> None:
    """Through the real stack: samples at the chosen values (JSON and CSV), a model whose
    inputs are (x, k), and 422s that name the field."""
    import torch

    from tests.test_service import finish

    spec = with_options(DECAY, max_iterations=200, escalate=False)
    r = service.post("/solve", json=spec)
    assert r.status_code == 202, r.text
    job = finish(service, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["metrics"]["estimate"]["rel_l2"] is not None
    sol = service.get(f"/jobs/{job['id']}/solution").json()
    assert sol["parameters"]["k"][:11] == [0.5] * 11 and len(sol["x"]) == 33
    assert service.get(f"/jobs/{job['id']}/solution.csv").text.startswith("x,k,y")
    model = torch.jit.load(io.BytesIO(service.get(f"/jobs/{job['id']}/model.pt").content))
    out = model(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert abs(float(out[0, 0]) - np.exp(-1.0)) < 1e-2
    bad = service.post("/solve", json={**spec, "output": {"parameters": {"k": [5]}}})
    assert bad.status_code == 422 and "output.parameters.k[0]" in bad.text
    assert bad.headers["content-type"].startswith("application/problem+json")
