"""Validation of problem specs: every mistake is a SpecError naming the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from odeserve import SpecError, load_problem
from odeserve.errors import IllPosedError, UnknownNameError

BASE: dict[str, Any] = {"equations": ["y'' = -y"], "domain": [0, 1], "conditions": ["y(0) = 0", "y'(0) = 1"]}


def spec(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def test_the_brief_example() -> None:
    problem = load_problem(
        {
            "equations": ["y'' + y'/5 + y = -exp(-x/5)*cos(x)/5"],
            "domain": [0, 2],
            "variable": "x",
            "conditions": ["y(0) = 0", "y'(0) = 1"],
            "parameters": {"k": 0.5},
            "exact": {"y": "exp(-x/5)*sin(x)"},
            "output": {"points": 201, "derivatives": 1},
            "options": {"precision": "float64", "seed": 0, "time_limit_s": 60},
        }
    )
    assert problem.unknowns == ("y",)
    assert problem.orders == {"y": 2}
    assert len(problem.output_x) == 201


def test_inference_explicit_unknowns_and_constant_domain() -> None:
    p = load_problem(
        {"equations": ["u' = v", "v' = -u"], "domain": [0, "2*pi"], "conditions": ["u(0) = 0", "v(0) = 1"]}
    )
    assert p.unknowns == ("u", "v")
    assert p.domain[1] == pytest.approx(6.283185307179586)
    p = load_problem(
        {"equations": ["z = y'"], "unknowns": ["y", "z"], "domain": [0, 1], "conditions": ["y(0) = 1"]}
        | {"equations": ["y' = z", "z = 2*y"]}
    )
    assert p.unknowns == ("y", "z") and p.orders == {"y": 1, "z": 0}
    # An unknown that appears without primes in equations but at a point in a condition:
    p = load_problem({"equations": ["diff(y, x, 2) = -y"], "domain": [0, 1], "conditions": ["y(0) = 0", "y(1) = 1"]})
    assert p.orders == {"y": 2}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"equations": ["y'' = sinn(x)"]},
            UnknownNameError,
            "equations[0]: unknown function 'sinn' at column 7 (did you mean 'sin'?)",
        ),
        ({"equations": ["y'' = -k*y"]}, UnknownNameError, "equations[0]: unknown name 'k' at column 8"),
        ({"conditions": ["y(0) = 0"]}, IllPosedError, "conditions: 1 condition(s) given, but the problem needs 2"),
        (
            {"conditions": ["y(0) = 0", "y(2) = 1"]},
            IllPosedError,
            "conditions[1]: point 2 is outside the domain [0, 1]",
        ),
        (
            {"conditions": ["y(0) = 0", "y''(0) = 1"]},
            IllPosedError,
            "conditions[1]: 'y' appears with derivatives up to order 2",
        ),
        (
            {"conditions": ["y(0) = 0", "1 = 1"]},
            SpecError,
            "conditions[1]: a condition must involve an unknown at a point",
        ),
        ({"conditions": ["y(0) = 0", "y = 1"]}, SpecError, "conditions[1]: a condition needs 'y' at a point"),
        ({"conditions": ["y(0) = 0", "y(x) = 1"]}, SpecError, "conditions[1]: a condition needs 'y' at a point"),
        (
            {"equations": ["y'' = -y", "z' = 1"]},
            IllPosedError,
            "conditions: 2 condition(s) given, but the problem needs 3",
        ),
        (
            {"equations": ["y'' = -y"], "unknowns": ["y", "z"]},
            IllPosedError,
            "equations: 1 equation(s) for 2 unknown(s)",
        ),
        ({"equations": ["y''''' = 1"]}, SpecError, "above the maximum 4"),
        ({"equations": ["y'' = y(0)"]}, SpecError, "equations[0]: 'y' at a point belongs in conditions"),
        ({"domain": [1, 0]}, IllPosedError, "domain: needs a < b"),
        ({"domain": [0, "log(0)"]}, SpecError, "domain[1]"),
        ({"domain": [0, "x"]}, SpecError, "domain[1]: 'x' cannot appear here"),
        ({"domain": [0, float("inf")]}, SpecError, "domain[1]: input should be a finite number"),
        ({"parameters": {"sin": 1.0}}, SpecError, "parameters.sin: parameter 'sin' shadows a function"),
        ({"parameters": {"x": 1.0}}, SpecError, "parameters.x: parameter 'x' shadows the variable"),
        ({"parameters": {"y": 1.0}}, SpecError, "parameters.y: parameter 'y' has the name of an unknown"),
        ({"parameters": {"k": float("nan")}}, SpecError, "parameters.k: input should be a finite number"),
        ({"exact": {"w": "x"}}, SpecError, "exact.w: 'w' is not an unknown"),
        ({"exact": {"y": "y'"}}, SpecError, "exact.y"),
        ({"output": {"x": [0.5, 3.0]}}, SpecError, "output.x[1]: point 3 is outside the domain"),
        ({"output": {"points": 1}}, SpecError, "output.points"),
        ({"options": {"network": {"width": 0}}}, SpecError, "options.network.width"),
        ({"options": {"optimiser": "lm"}}, SpecError, "options.optimiser: unknown field"),
        ({"bogus": 1}, SpecError, "bogus: unknown field"),
        ({"variable": "sin"}, SpecError, "variable: 'sin' is a function"),
        ({"equations": []}, SpecError, "equations"),
    ],
)
def test_invalid_specs_name_field_and_reason(changes: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        load_problem(spec(**changes))
    assert message in str(info.value)


def test_linear_condition_forms() -> None:
    p = load_problem(
        {"equations": ["y'' = -y"], "domain": [0, 1], "conditions": ["y'(1) + 2*y(1) = -pi", "y(0)^2 = 1"]}
    )
    robin, nonlinear = p.conditions
    assert robin.linear is not None and robin.linear.coeffs == {("y", 1, 1.0): 1.0, ("y", 0, 1.0): 2.0}
    assert nonlinear.linear is None


def test_a_power_of_one_is_a_linear_condition() -> None:
    """y(0)^1 is y(0): built into the trial solution, as y(0) = 1 is; y(0)^0 is constant, a penalty."""
    p = load_problem({"equations": ["y'' = -y"], "domain": [0, 1], "conditions": ["3*y(0)^(2-1) = 3", "y(1)^0 = 1"]})
    one, zero = p.conditions
    assert one.linear is not None and one.linear.coeffs == {("y", 0, 0.0): 3.0} and one.linear.constant == -3.0
    assert zero.linear is None


def test_spec_hash_is_stable_and_sensitive() -> None:
    import json

    # The same problem written two ways: other key order, JSON text, defaults spelled out.
    explicit = {
        "options": {"seed": 0, "precision": "float64", "points": 128},
        "conditions": ["y(0) = 0", "y'(0) = 1"],
        "variable": "x",
        "domain": [0.0, 1.0],
        "equations": ["y'' = -y"],
        "output": {"points": 201},
    }
    assert load_problem(BASE).spec_hash == load_problem(json.dumps(explicit)).spec_hash
    assert load_problem(BASE).spec_hash != load_problem(spec(domain=[0, 2])).spec_hash
    assert load_problem(BASE).spec_hash != load_problem(spec(options={"seed": 1})).spec_hash
