"""``/``: the playground page (plain HTML and JavaScript, served as is; no build step), and the
example problems it offers (the public examples of ``odeserve.examples``)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter()

#: The examples the page offers, the seed example first.
EXAMPLES = ("seed_gauss", "seed_poly", "lagaris3_ivp", "harmonic_system", "decay_t", "neumann_robin")


@cache
def _page() -> str:
    return (files("service") / "static" / "playground.html").read_text(encoding="utf-8")


@cache
def _examples() -> dict[str, Any]:
    problems = json.loads((files("odeserve.examples") / "public.json").read_text(encoding="utf-8"))["problems"]
    return {name: problems[name] for name in EXAMPLES if name in problems}


@router.get("/", name="playground", response_class=HTMLResponse, include_in_schema=False)
def playground() -> HTMLResponse:
    """A problem editor with examples, a live loss curve, the plot and links to the results."""
    return HTMLResponse(_page())


@router.get("/playground/examples.json", name="playground_examples", include_in_schema=False)
def playground_examples() -> JSONResponse:
    return JSONResponse(_examples())
