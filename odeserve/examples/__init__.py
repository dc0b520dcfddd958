"""Example problems shipped with odeserve, each with its exact solution (no torch).

``public`` holds the public benchmark problems (the seed questions, Lagaris et al. 1998 problems
1-3 and textbook cases); ``hard`` the hard cases of the error estimate and escalation. The tests, the benchmarks and the playground all read them from here.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

#: The problem sets, by name: a JSON file beside this module, ``{"about": ..., "problems": {...}}``.
SETS = ("public", "hard")


def problems(name: str = "public") -> dict[str, dict[str, Any]]:
    """The problems of one set as spec dicts, by problem name."""
    if name not in SETS:
        raise KeyError(f"no example set {name!r}; there are {list(SETS)}")
    return json.loads(files(__name__).joinpath(f"{name}.json").read_text())["problems"]


def public_problems() -> dict[str, dict[str, Any]]:
    return problems("public")


def hard_problems() -> dict[str, dict[str, Any]]:
    """Hard cases (issue 9): boundary layers, stiffness, long horizons, chaos, singular ends;
    those without ``exact`` are measured against a tight scipy solution."""
    return problems("hard")
