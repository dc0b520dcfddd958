"""The problems the tests use: the public set shipped in ``odeserve.examples`` (one loader for the
tests, the benchmarks and the playground) and a helper to change options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from odeserve.examples import public_problems

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["NONLINEAR", "NO_TIME_LIMIT_S", "ROOT", "ROUNDING", "cancel_once_at", "public_problems", "with_options"]


#: Tests never depend on how busy the machine is: unless a test sets a time limit itself, the
#: iteration budget decides when training ends (timing belongs in bench/).
NO_TIME_LIMIT_S = 3600


#: How far apart two float64 evaluations of one trained network may round (absolute, for values
#: of order 1): a linear problem's output layer is solved exactly and its weights are large and
#: cancelling (up to ~3e5 on the public problems, against hidden activations below 1), so the
#: order of the sums moves the result by ~|w| * eps per term: 1e-12 to 3e-11 measured (the
#: exported models against the samples, a hard condition's residual), depending on the machine.
ROUNDING = 1e-10


#: A nonlinear problem: plain Levenberg-Marquardt steps, which train on for the whole budget
#: (a linear problem's steps solve the output layer exactly and converge within ~200
#: iterations): for the tests that need a run still training when they act on it.
NONLINEAR: dict[str, Any] = {
    "equations": ["y' + y^2 = 0"],
    "domain": [0, 2],
    "conditions": ["y(0) = 1"],
    "exact": {"y": "1/(1 + x)"},
}


def with_options(spec: dict[str, Any], **options: Any) -> dict[str, Any]:
    """``spec`` with these options (and no effective time limit unless one is given)."""
    out = dict(spec)
    out["options"] = {"time_limit_s": NO_TIME_LIMIT_S, **spec.get("options", {}), **options}
    return out


def cancel_once_at(n: int) -> Callable[[], bool]:
    """A ``should_stop`` hook that says True at its ``n``-th call only, as a worker's poll of the
    cancel flag says it once."""
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls == n

    return should_stop
