"""``/``: the playground page (plain HTML and JavaScript, served as is; no build step)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", name="playground", response_class=HTMLResponse, include_in_schema=False)
def playground() -> HTMLResponse:
    """A problem editor with examples, a live loss curve, the plot and links to the results."""
    return HTMLResponse((files("service") / "static" / "playground.html").read_text(encoding="utf-8"))
