"""Write openapi/openapi.json from the app (``make openapi``); a test keeps them equal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.settings import Settings  # noqa: E402
from service.app import create_app  # noqa: E402


def render() -> str:
    return json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    (ROOT / "openapi" / "openapi.json").write_text(render())
    print("wrote openapi/openapi.json")
