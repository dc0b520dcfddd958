"""The committed OpenAPI document and the compose file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_matches_settings() -> None:
    from common.settings import Settings

    compose = _compose()
    services = compose["services"]
    assert set(services) >= {"redis", "api", "worker", "worker-gpu"}
    redis = services["redis"]
    command = " ".join(map(str, redis["command"]))
    assert "appendonly yes" in command and "--maxmemory-policy noeviction" in command and "--maxmemory 2gb" in command
    assert "--requirepass" in command and "/run/secrets/redis_password" in command
    assert redis["healthcheck"]["test"] and "redis_password" in redis["secrets"]
    assert any(str(v).startswith("redis-data:") for v in redis["volumes"]) and "redis-data" in compose["volumes"]
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # CPU by default (no profile needs a GPU); the GPU worker is one profile away, one GPU each.
    assert services["worker"]["profiles"] == ["cpu"] and "deploy" not in services["worker"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and "gpu" in gpu["capabilities"]
    assert "COMPOSE_PROFILES=cpu" in (ROOT / ".env").read_text().splitlines()
    known = {f"ODESERVE_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker", "worker-gpu"):
        env = services[name]["environment"]
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        odeserve = {n for n in names if n.startswith("ODESERVE_")}
        assert odeserve <= known, odeserve - known
        assert {"REDIS_ADDRESS", "REDIS_PASSWORD_FILE"} <= names  # the entrypoint builds ODESERVE_REDIS_URL
        assert "redis_password" in services[name]["secrets"]
    for name in ("worker", "worker-gpu"):
        assert services[name]["healthcheck"]["test"] and services[name]["stop_grace_period"]
    assert "torch" not in (ROOT / services["api"]["build"]["dockerfile"]).read_text().split("#")[0]


def _dockerfile_paths(text: str) -> list[str]:
    paths = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            paths += [p for p in parts[1:-1] if not p.startswith("--")]
    return paths


def _images(compose: dict) -> list[str]:
    images = [svc["image"] for svc in compose["services"].values() if "image" in svc]
    for svc in compose["services"].values():
        if "build" in svc:
            text = (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).read_text()
            images += [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    return images


def test_every_path_and_image_the_compose_file_references_exists(tmp_path) -> None:
    import subprocess

    compose = _compose()
    for svc in compose["services"].values():
        if "build" in svc:
            context = ROOT / svc["build"]["context"]
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), dockerfile
            for path in _dockerfile_paths(dockerfile.read_text()):
                assert (context / path).exists(), (dockerfile.name, path)
            assert "USER nobody" in dockerfile.read_text()  # non-root
    entrypoint = ROOT / "docker" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111 and "WARNING" in entrypoint.read_text()
    # Secrets are not committed: `make secrets` (the README's first step) creates every file the
    # compose file names, readable by the containers' non-root user.
    subprocess.run(["make", "-s", "-C", str(ROOT), "secrets", f"SECRETS_DIR={tmp_path / 'secrets'}"], check=True)
    for secret in compose["secrets"].values():
        path = tmp_path / "secrets" / Path(secret["file"]).name
        assert Path(secret["file"]).parent == Path("secrets") and path.is_file(), secret
        assert path.stat().st_mode & 0o444 == 0o444
    assert len((tmp_path / "secrets" / "redis_password").read_text().strip()) == 64
    # Images: pinned tags, never "latest" (the registry is not reachable from the tests).
    for image in _images(compose):
        name, _, tag = image.partition(":")
        assert name and tag and tag != "latest", image
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "secrets/", "var/", ".git/"} <= set(ignored)


def _ops(spec: dict) -> dict:
    return {(m, p): o for p, item in spec["paths"].items() for m, o in item.items()}


def test_errors_are_problem_json_only_with_their_headers() -> None:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    for (method, path), op in _ops(spec).items():
        assert "405" in op["responses"], (method, path)
        for status, response in op["responses"].items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)
        if op.get("security"):
            assert "401" in op["responses"], (method, path)
    submit = _ops(spec)[("post", "/solve")]
    assert {"401", "413", "415", "422", "429", "503"} <= set(submit["responses"])
    assert {"Location", "Retry-After"} <= set(submit["responses"]["202"]["headers"])
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert all(
        p.get("in") != "header" or p["name"] != "X-API-Key"
        for o in _ops(spec).values()
        for p in o.get("parameters", [])
    )


def test_each_representation_has_its_own_media_type() -> None:
    ops = _ops(json.loads((ROOT / "openapi" / "openapi.json").read_text()))
    media = {path: list(op["responses"]["200"]["content"]) for (m, path), op in ops.items() if m == "get"}
    assert media["/jobs/{job_id}/solution"] == ["application/json"]
    assert media["/jobs/{job_id}/solution.csv"] == ["text/csv"]
    assert media["/jobs/{job_id}/model.pt"] == media["/jobs/{job_id}/model.pt2"] == ["application/octet-stream"]
    assert media["/jobs/{job_id}/plot.png"] == ["image/png"] and media["/jobs/{job_id}/plot.svg"] == ["image/svg+xml"]
    assert media["/jobs/{job_id}/events"] == ["text/event-stream"]
    assert ops[("get", "/metrics")]["responses"]["200"]["content"]["text/plain"]["schema"] == {"type": "string"}
    for op in ops.values():
        assert not any(p["name"] == "format" for p in op.get("parameters", []))


def test_closed_values_are_enums() -> None:
    schemas = json.loads((ROOT / "openapi" / "openapi.json").read_text())["components"]["schemas"]
    assert set(schemas["Job"]["properties"]["status"]["enum"]) == {
        "queued",
        "running",
        "succeeded",
        "failed",
        "canceled",
    }
    assert "stalled" in schemas["Outcome"]["enum"]
    assert set(schemas["JobErrorInfo"]["properties"]["type"]["enum"]) == {
        "worker_died",
        "timeout",
        "memory_limit",
        "refused",
        "diverged",
        "error",
    }
    assert {"field", "count", "kinds", "reason"} <= set(schemas["NonFinite"]["properties"])


def test_served_document_states_this_servers_limits() -> None:
    from fastapi.testclient import TestClient

    from common.settings import Settings
    from service.app import create_app

    app = create_app(Settings(max_sample_points=500, max_iterations=1234, api_keys="k"))
    doc = TestClient(app).get("/openapi.json").json()  # what a running server serves
    body = doc["paths"]["/solve"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    output = body["properties"]["output"]
    output = output.get("anyOf", [output])[0] if "properties" not in output else output
    assert output["properties"]["points"]["maximum"] == 500
    options = body["properties"]["options"]
    options = options.get("anyOf", [options])[0] if "properties" not in options else options
    assert options["properties"]["max_iterations"]["maximum"] == 1234
    assert "output points ≤ 500" in doc["info"]["description"] and "required" in doc["info"]["description"]
    assert {} not in doc["paths"]["/solve"]["post"]["security"]  # keys on: not optional
