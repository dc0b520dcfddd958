"""Fuzzing: validation accepts or raises SpecError, nothing else; user text never runs; the API
never answers 5xx. ODESERVE_FUZZ_EXAMPLES scales the runs (default 10,000 for validation)."""

from __future__ import annotations

import contextlib
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odeserve import SpecError, load_problem
from tests.conftest import make_client

EXAMPLES = int(os.environ.get("ODESERVE_FUZZ_EXAMPLES", "10000"))
CANARY = "/tmp/odeserve_fuzz_canary"

TOKENS = [
    "y",
    "y'",
    "y''",
    "u",
    "v",
    "x",
    "t",
    "k",
    "pi",
    "e",
    "sin",
    "cos",
    "exp",
    "log",
    "sqrt",
    "abs",
    "arcsin",
    "diff",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "^",
    "**",
    "=",
    "0",
    "1",
    "2.5",
    "1e3",
    "1e999",
    ".5",
    "9",
    "__import__",
    "os",
    "system",
    "open",
    "eval",
    "exec",
    "lambda",
    ":",
    "[",
    "]",
    "{",
    "}",
    ".",
    "'",
    '"',
    "__class__",
    "__globals__",
    "getattr",
    "import",
    ";",
    "#",
    "\\",
    "@",
    "!",
    "nan",
    "inf",
    "  ",
    "\n",
    f"'touch {CANARY}'",
    "y(0)",
    "y'(1)",
    "x;",
    "\x00",
    "é",
    "∞",
    "\uff11",  # full-width 1
    "\u0661",  # Arabic-Indic 1
    "\u2003",  # em space
    "\u00a0",  # no-break space
    "1/(1-1)",
    "/(2-2)",
    "5e-324",
    "1e308",
]
token_soup = st.lists(st.sampled_from(TOKENS), min_size=0, max_size=30).map("".join)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True, allow_infinity=True), token_soup
)


@st.composite
def specs(draw) -> dict:
    spec = {
        "equations": draw(st.one_of(st.lists(token_soup, max_size=3), json_scalars)),
        "domain": draw(st.one_of(st.tuples(json_scalars, json_scalars).map(list), json_scalars)),
        "conditions": draw(st.one_of(st.lists(token_soup, max_size=3), json_scalars)),
    }
    for field, values in {
        "variable": st.one_of(st.sampled_from(["x", "t", "sin", "1x", "__import__"]), json_scalars),
        "parameters": st.dictionaries(st.sampled_from(["k", "x", "y", "sin", "a b", "__x"]), json_scalars, max_size=3),
        "exact": st.dictionaries(st.sampled_from(["y", "u", "z"]), token_soup, max_size=2),
        "options": st.dictionaries(
            st.sampled_from(["seed", "points", "precision", "network", "bogus"]), json_scalars, max_size=2
        ),
        "output": st.dictionaries(st.sampled_from(["points", "x", "derivatives"]), json_scalars, max_size=2),
    }.items():
        if draw(st.booleans()):
            spec[field] = draw(values)
    return spec


def _check(spec: object) -> None:
    """Accepted, or a SpecError; any other exception fails the test."""
    with contextlib.suppress(SpecError):
        load_problem(spec)  # type: ignore[arg-type]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(token_soup, token_soup)
def test_random_equations_validate_or_raise_spec_error(lhs: str, rhs: str) -> None:
    _check({"equations": [f"{lhs} = {rhs}"], "domain": [0, 1], "conditions": [rhs or "y(0) = 1"]})
    assert not os.path.exists(CANARY)


@settings(max_examples=max(EXAMPLES // 5, 100), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(specs())
def test_random_specs_validate_or_raise_spec_error(spec: dict) -> None:
    _check(spec)
    assert not os.path.exists(CANARY)


def test_api_never_answers_5xx(redis_server) -> None:
    seen: set[int] = set()
    with make_client(redis_server.url, "odeserve-fuzz") as client:  # no worker: jobs only queue

        @settings(
            max_examples=max(EXAMPLES // 50, 50), deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(st.one_of(specs(), json_scalars))
        def post(body) -> None:
            r = client.post(
                "/solve", content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
            )
            seen.add(r.status_code)
            assert r.status_code < 500, r.text
            if r.status_code != 202:
                assert r.headers["content-type"] == "application/problem+json"

        post()
    assert 422 in seen
    assert not os.path.exists(CANARY)


@settings(max_examples=max(EXAMPLES // 5, 100), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(token_soup, st.text(min_size=1, max_size=3).filter(lambda t: not t.isascii()))
def test_non_ascii_text_is_always_rejected(text: str, foreign: str) -> None:
    """Look-alike digits, letters and spaces never read as their ASCII twins (issue 10 §6)."""
    from odeserve.expr.parser import tokenize

    cut = len(text) // 2
    try:
        tokenize(text[:cut] + foreign + text[cut:])
    except SpecError:
        return
    raise AssertionError(f"accepted {text[:cut] + foreign + text[cut:]!r}")


@settings(max_examples=max(EXAMPLES // 20, 100), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)))
def test_random_domains_validate_or_raise_spec_error(domain: tuple[float, float]) -> None:
    """Any two finite or infinite ends: accepted only with a finite, normal, resolvable width."""
    spec = {"equations": ["y' = -y"], "domain": list(domain), "conditions": [f"y({domain[0]!r}) = 1"]}
    try:
        problem = load_problem(spec)
    except SpecError:
        return
    a, b = problem.domain
    assert a < b and b - a >= 2.2250738585072014e-308 and b - a < float("inf")


def test_api_never_answers_5xx_to_odd_methods_and_headers(redis_server) -> None:
    """Made-up methods, odd Idempotency-Keys, keys and content types (issue 10 §6)."""
    with make_client(redis_server.url, "odeserve-fuzz-http", api_keys="k1") as client:

        @settings(
            max_examples=max(EXAMPLES // 50, 50), deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(
            st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO", "BREW", "X" * 40]),
            st.sampled_from(["/solve", "/jobs/abc", "/jobs/abc/solution", "/metrics", "/healthz", "/nope"]),
            st.dictionaries(
                st.sampled_from(["Idempotency-Key", "X-API-Key", "Authorization", "Content-Type", "X-Request-ID"]),
                st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
                max_size=4,
            ),
            st.one_of(st.none(), specs(), json_scalars),
        )
        def request(method: str, path: str, headers: dict[str, str], body: object) -> None:
            content = None if body is None else json.dumps(body, allow_nan=True)
            r = client.request(method, path, content=content, headers=headers)
            assert r.status_code < 500, (method, path, headers, r.status_code, r.text)

        request()
        assert "FOO" not in client.get("/metrics").text
