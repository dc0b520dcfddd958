"""The problems the tests use: the public set shipped in ``odeserve.examples`` (one loader for the
tests, the benchmarks and the playground) and a helper to change options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odeserve.examples import public_problems

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["NONLINEAR", "NO_TIME_LIMIT_S", "ROOT", "public_problems", "with_options"]


#: Tests never depend on how busy the machine is: unless a test sets a time limit itself, the
#: iteration budget decides when training ends (timing belongs in bench/).
NO_TIME_LIMIT_S = 3600


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
