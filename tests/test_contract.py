"""The committed OpenAPI document, import boundaries, compose file and packaging."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.problems import ROOT


def test_committed_openapi_matches_the_app() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from write_openapi import render

    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert committed == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_operation_ids_and_documented_errors() -> None:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    ops = {(m, p): o for p, item in spec["paths"].items() for m, o in item.items()}
    assert {o["operationId"] for o in ops.values()} == {
        "submit_problem",
        "get_job",
        "cancel_job",
        "get_solution",
        "get_model",
        "metrics",
        "health",
        "ready",
    }
    assert {"413", "422", "503"} <= set(ops[("post", "/solve")]["responses"])
    for path in ("/jobs/{job_id}/solution", "/jobs/{job_id}/model"):
        assert {"404", "409", "422", "503"} <= set(ops[("get", path)]["responses"])
    problem = spec["components"]["schemas"]["Problem"]
    assert {"title", "status", "detail"} <= set(problem["required"])


def _imports(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import odeserve", {"torch", "fastapi", "rq", "redis"}),
        ("import odeserve.spec, odeserve.problem, odeserve.expr", {"torch", "fastapi", "rq", "numpy"}),
        ("from odeserve import solve, load_problem", {"torch"}),
        ("import service.app, service.jobs, service.runner", {"torch"}),
        ("import worker.artifacts, worker.main", {"fastapi"}),
        (
            "import odeserve.solver.solve, odeserve.solver.solution, odeserve.cli, odeserve.plot",
            {"fastapi", "rq", "redis", "service", "worker"},
        ),
    ],
)
def test_import_boundaries(code: str, forbidden: set[str]) -> None:
    loaded = _imports(code)
    assert not {m.split(".")[0] for m in loaded} & forbidden


def test_worker_module_loads_torch_only_in_the_job() -> None:
    loaded = _imports("import worker.jobs")
    assert "torch" not in loaded


def test_compose_file_matches_settings() -> None:
    from service.settings import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"redis", "api", "worker"}
    redis = services["redis"]
    assert "appendonly" in " ".join(map(str, redis["command"])) and redis["healthcheck"]["test"]
    assert any(str(v).startswith("redis-data:") for v in redis["volumes"]) and "redis-data" in compose["volumes"]
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    known = {f"ODESERVE_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker"):
        env = services[name]["environment"]
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        assert names <= known, names - known
        assert "ODESERVE_REDIS_URL" in names
    for name in ("api", "worker"):
        dockerfile = ROOT / services[name]["build"]["dockerfile"]
        assert dockerfile.exists()
    assert "torch" not in (ROOT / services["api"]["build"]["dockerfile"]).read_text().split("#")[0]
