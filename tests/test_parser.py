"""The expression language: what it accepts, how it compiles, what it refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odeserve.errors import ExpressionSyntaxError, LimitError, SpecError
from odeserve.evaluate import NUMPY, evaluate
from odeserve.expr.nodes import Binary, Deriv, Name, Unary
from odeserve.expr.parser import parse_equation, parse_expression
from odeserve.expr.program import compile_node, run_float
from odeserve.solver.residual import run_torch


def const(text: str) -> float:
    return run_float(compile_node(parse_expression(text), lambda n: {"pi": math.pi, "e": math.e}[n.name]))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2*3", 7.0),
        ("2^3^2", 512.0),
        ("2**3**2", 512.0),
        ("-2^2", -4.0),
        ("2^-1", 0.5),
        ("(1 + 2)*3", 9.0),
        ("1e-3 + .5 + 2. + 1E+2", 102.501),
        ("sin(pi/2) + cos(0) + exp(0) + log(e) + sqrt(4) + abs(-1)", 7.0),
        ("asin(1) - arcsin(1) + atan(1)*4 - pi", 0.0),
        ("tanh(0) + sinh(0) + cosh(0) + tan(0) + arccos(1) + acos(1)", 1.0),
        ("8/4/2", 1.0),
        ("1 - 2 - 3", -4.0),
    ],
)
def test_constant_expressions(text: str, value: float) -> None:
    assert const(text) == pytest.approx(value, abs=1e-15)


def test_primes_diff_and_points() -> None:
    assert parse_expression("y''") == Deriv("y", 2, None, 1)
    assert parse_expression("diff(y, x, 3)") == Deriv("y", 3, None, 1)
    assert parse_expression("diff(y, t)", variable="t") == Deriv("y", 1, None, 1)
    node = parse_expression("y'(2*pi)")
    assert isinstance(node, Deriv) and node.order == 1 and isinstance(node.at, Binary)
    assert parse_expression("y(x)") == Deriv("y", 0, None, 1)
    assert parse_expression("y") == Name("y", 1)
    assert isinstance(parse_expression("-y"), Unary)
    lhs, rhs = parse_equation("y' = -2*x*y")
    assert lhs == Deriv("y", 1, None, 1)


@pytest.mark.parametrize(
    ("text", "error", "column", "fragment"),
    [
        ("2x", ExpressionSyntaxError, 2, "implicit multiplication"),
        ("x y", ExpressionSyntaxError, 3, "implicit multiplication"),
        ("sin x", ExpressionSyntaxError, 1, "needs an argument"),
        ("y'''''", ExpressionSyntaxError, 1, "above the maximum 4"),
        ("diff(y, z)", ExpressionSyntaxError, 9, "variable 'x'"),
        ("diff(y, x, 5)", ExpressionSyntaxError, 12, "outside 1..4"),
        ("(1 + 2", ExpressionSyntaxError, 7, "expected ')'"),
        ("1 +", ExpressionSyntaxError, 4, "end of expression"),
        ("sin'(x)", ExpressionSyntaxError, 1, "cannot take a prime"),
        ("pi(2)", ExpressionSyntaxError, 1, "constant, not a function"),
        ("1e999", ExpressionSyntaxError, 1, "not finite"),
        ("sin(1, 2)", ExpressionSyntaxError, 6, "one argument"),
        ("", ExpressionSyntaxError, 1, "empty"),
        ("x # comment", ExpressionSyntaxError, 3, "unexpected character"),
    ],
)
def test_syntax_errors_name_the_column(text: str, error: type, column: int, fragment: str) -> None:
    with pytest.raises(error) as info:
        parse_expression(text)
    assert info.value.column == column
    assert fragment in str(info.value)


CANARY = "/tmp/odeserve_canary_must_not_exist"

HOSTILE = [
    f"__import__('os').system('touch {CANARY}')",
    f"open('{CANARY}', 'w')",
    "x.__class__",
    "(lambda: 1)()",
    "[c for c in ()]",
    "open('/etc/passwd')",
    "x if x else y",
    "{1: 2}",
    "'a' * 3",
    "x[0]",
    "exec('1')",
    "eval('1')",
    "x; import os",
    "a := 1",
    "nan",
    "inf",
    "1e400",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_is_rejected_not_run(text: str) -> None:
    import os

    from odeserve.problem import load_problem

    if os.path.exists(CANARY):
        os.remove(CANARY)
    for spec in (
        {"equations": [f"y' = {text}"], "domain": [0, 1], "conditions": ["y(0) = 0"]},
        {"equations": ["y' = y"], "domain": [0, text], "conditions": ["y(0) = 0"]},
        {"equations": ["y' = y"], "domain": [0, 1], "conditions": [f"y(0) = {text}"]},
        {"equations": ["y' = y"], "domain": [0, 1], "conditions": ["y(0) = 0"], "exact": {"y": text}},
    ):
        with pytest.raises(SpecError) as info:
            load_problem(spec)
        assert info.value.field.split("[")[0].split(".")[0] in ("equations", "domain", "conditions", "exact")
    assert not os.path.exists(CANARY), "user text was executed"


def test_length_and_depth_caps() -> None:
    with pytest.raises(LimitError, match="2000"):
        parse_expression("x+" * 50_000 + "x")
    # 10,000-deep nesting is stopped by the length cap before any parsing happens ...
    with pytest.raises(LimitError, match="limit is 2000"):
        parse_expression("(" * 10_000 + "x" + ")" * 10_000)
    # ... and nesting that fits in the length is stopped by the depth cap, not by the stack.
    with pytest.raises(LimitError, match="deeper than"):
        parse_expression("(" * 900 + "x" + ")" * 900)
    with pytest.raises(LimitError, match="deeper than"):
        parse_expression("-" * 1500 + "x")
    with pytest.raises(LimitError, match="deeper than"):
        parse_expression("sin(" * 300 + "x" + ")" * 300)
    # Long but flat is fine: evaluation is iterative, so no recursion limit is hit.
    program = compile_node(parse_expression("+".join(["x"] * 999)), lambda n: "x")
    assert program.run({"x": 1.0}, NUMPY) == 999.0


def test_power_towers_fold_without_hanging() -> None:
    with pytest.raises(ValueError):
        const("9^9^9")
    with pytest.raises(ValueError):
        const("log(-1)")
    with pytest.raises(ValueError):
        const("1/0")


def test_a_power_of_one_compiles_to_its_base() -> None:
    """a^1 is a (so the linearity checks see y, not a power of it); a^2 and a^0 stay powers."""
    load = lambda n: n.name  # noqa: E731
    assert compile_node(parse_expression("(x + y)^(3 - 2)"), load) == compile_node(parse_expression("x + y"), load)
    assert compile_node(parse_expression("y^2"), load).instrs[-1].op == "^"
    assert compile_node(parse_expression("y^0"), load).instrs[-1].op == "^"


# -- hypothesis: random valid expressions agree with an independent numpy evaluation ----------

SAFE_UNARY = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "arctan": np.arctan,
    "exp": lambda v: np.exp(np.clip(v, -30, 30)),
}


def _expressions(depth: int = 4):
    leaves = st.one_of(
        st.floats(min_value=-5, max_value=5, allow_nan=False).map(lambda v: (f"({v!r})", lambda x, v=v: v + 0 * x)),
        st.just(("x", lambda x: x)),
        st.just(("pi", lambda x: np.pi + 0 * x)),
    )

    def extend(children):
        binary = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(
            lambda t: (
                f"({t[0][0]} {t[1]} {t[2][0]})",
                {
                    "+": lambda f, g: lambda x: f(x) + g(x),
                    "-": lambda f, g: lambda x: f(x) - g(x),
                    "*": lambda f, g: lambda x: f(x) * g(x),
                }[t[1]](t[0][1], t[2][1]),
            )
        )
        unary = st.tuples(st.sampled_from(sorted(SAFE_UNARY)), children).map(
            lambda t: (
                f"{t[0]}({t[1][0]})" if t[0] != "exp" else f"exp(({t[1][0]}) * 0 + x / 5)",
                (lambda f, name: (lambda x: SAFE_UNARY[name](f(x))) if name != "exp" else (lambda x: np.exp(x / 5)))(
                    t[1][1], t[0]
                ),
            )
        )
        power = children.map(lambda c: (f"({c[0]})^2", lambda x, f=c[1]: f(x) ** 2))
        division = children.map(lambda c: (f"({c[0]}) / (2 + sin(x))", lambda x, f=c[1]: f(x) / (2 + np.sin(x))))
        return st.one_of(binary, unary, power, division)

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_expressions())
def test_compiled_expressions_agree_with_numpy(case) -> None:
    import torch

    text, reference = case
    program = compile_node(parse_expression(text), lambda n: math.pi if n.name == "pi" else "x")
    xs = np.linspace(-2, 2, 17)
    expected = reference(xs)
    got_numpy = evaluate(program, {"x": xs}, xs)
    got_torch = run_torch(program, {"x": torch.as_tensor(xs)}, torch.as_tensor(xs)).numpy()
    scale = 1 + np.abs(expected)
    assert np.all(np.abs(got_numpy - expected) <= 1e-9 * scale)
    assert np.all(np.abs(got_torch - expected) <= 1e-9 * scale)
