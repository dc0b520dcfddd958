"""The layers, enforced: odeserve (core) <- common (shared) <- service (API) | worker.

A static scan reads every import statement (module level or inside functions) of every module;
a runtime check loads each kind of process and lists what it actually imported. Adding an import
that crosses a layer fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.problems import ROOT

#: Top-level packages each layer must never import.
FORBIDDEN = {
    "odeserve": {"common", "service", "worker", "fastapi", "starlette", "rq", "redis", "pydantic_settings"},
    "common": {"service", "worker", "fastapi", "starlette", "torch"},
    "service": {"worker", "torch"},
    "worker": {"service", "fastapi", "starlette"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (absolute imports only)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_a_layer(package: str) -> None:
    assert violations(package) == []


def test_the_scan_catches_a_crossing_import(tmp_path: Path) -> None:
    """The check is not vacuous: a lazy import of the worker inside a service function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.jobs import solve_job\n    import torch.nn as nn\n")
    assert imported_modules(module) == {"worker.jobs", "torch.nn"}


def loaded_by(code: str) -> set[str]:
    """Top-level packages present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    ("process", "code", "forbidden"),
    [
        ("import odeserve", "import odeserve", {"torch", "numpy", "fastapi", "rq", "redis"}),
        (
            "validation (what the API runs)",
            "import odeserve.spec, odeserve.problem, odeserve.expr, odeserve.network, odeserve.report, odeserve.examples",
            {"torch", "numpy", "fastapi", "rq"},
        ),
        ("solve, lazily", "from odeserve import solve, load_problem, Hooks", {"torch"}),
        (
            "the API process",
            "from service.app import create_app; create_app().openapi()",
            {"torch", "worker", "numpy"},
        ),
        ("`odeserve serve`", "import service.runner, service.cli", {"torch", "worker"}),
        (
            "a worker process (parent and job)",
            "import worker.main, worker.jobs, worker.reporter, odeserve.solver.solve",
            {"fastapi", "starlette", "service"},
        ),
        (
            "the solver",
            "import odeserve.solver.solve, odeserve.solver.solution, odeserve.cli, odeserve.plot",
            {"fastapi", "rq", "redis", "common", "service", "worker"},
        ),
    ],
)
def test_what_each_process_loads(process: str, code: str, forbidden: set[str]) -> None:
    assert not loaded_by(code) & forbidden, process


def test_worker_module_loads_torch_only_in_the_job() -> None:
    assert "torch" not in loaded_by("import worker.jobs, worker.reporter")


def test_serve_without_the_service_extra_names_it() -> None:
    """An install without the service extra: `odeserve serve` says which extra to install
    (simulated by making pydantic_settings unimportable)."""
    code = (
        "import sys; sys.modules['pydantic_settings'] = None\nfrom odeserve.cli import main\nsys.exit(main(['serve']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "pip install 'odeserve[service]'" in out.stderr and "pydantic_settings" in out.stderr
