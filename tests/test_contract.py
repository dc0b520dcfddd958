"""The committed OpenAPI document and the compose file."""

from __future__ import annotations

import json
import sys

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
        "get_solution_csv",
        "get_model_torchscript",
        "get_model_export",
        "get_events",
        "get_plot_png",
        "get_plot_svg",
        "metrics",
        "get_history",
        "health",
        "ready",
    }
    assert {"413", "422", "503"} <= set(ops[("post", "/solve")]["responses"])
    for path in ("/jobs/{job_id}/solution", "/jobs/{job_id}/solution.csv", "/jobs/{job_id}/model.pt"):
        assert {"401", "404", "405", "409", "503"} <= set(ops[("get", path)]["responses"])
    problem = spec["components"]["schemas"]["Problem"]
    assert {"title", "status", "detail"} <= set(problem["required"])


def test_compose_file_matches_settings() -> None:
    from common.settings import Settings

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
