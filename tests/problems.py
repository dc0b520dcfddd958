"""The shared public problems (../shared/problems/public.json) with their exact solutions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("ODESERVE_SHARED", ROOT.parent / "shared"))


def public_problems() -> dict[str, dict[str, Any]]:
    return json.loads((shared_dir() / "problems" / "public.json").read_text())["problems"]


def with_options(spec: dict[str, Any], **options: Any) -> dict[str, Any]:
    out = dict(spec)
    out["options"] = {**spec.get("options", {}), **options}
    return out
