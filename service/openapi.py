"""The OpenAPI document as the server behaves: completed after FastAPI renders it.

FastAPI describes routes and models; this adds what it cannot know: errors are sent only as
``application/problem+json``; the headers (``Location`` on 202, ``Retry-After`` on 429 and 503,
``Allow`` on 405, ``X-Request-ID`` on every response); the statuses every route can answer (405
for another method, 415 and 413 for a body); whether API keys are required; and this server's
limits, in the schema's maxima and in the description.
"""

from __future__ import annotations

from typing import Any

from common.settings import Settings
from service.errors import PROBLEM_JSON, PROBLEM_STATUSES, Problem

_HEADERS = {
    "X-Request-ID": {
        "description": "The request's id (yours, or a generated one); also in the logs and the job's traces.",
        "schema": {"type": "string"},
    },
    "Location": {"description": "The job's URL.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
    "Allow": {"description": "The methods this path answers.", "schema": {"type": "string"}},
}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": PROBLEM_STATUSES[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _headers_for(status: str) -> dict[str, Any]:
    names = ["X-Request-ID"]
    if status == "202":
        names.append("Location")
    if status in ("202", "429", "503"):
        names.append("Retry-After")
    if status == "405":
        names.append("Allow")
    return {n: _HEADERS[n] for n in names}


def _complete_operation(method: str, op: dict[str, Any], keys_on: bool) -> None:
    responses: dict[str, Any] = op["responses"]
    extra = [405]
    if method in ("post", "put", "patch"):
        extra += [413, 415]
    elif responses.get("422", {}).get("description") == "Validation Error":
        del responses["422"]  # FastAPI adds it for any parameter; only a body can be invalid here
    for extra_status in extra:
        responses.setdefault(str(extra_status), _problem_response(extra_status))
    for code, response in responses.items():
        if code.isdigit() and int(code) >= 400:
            response["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        response["headers"] = _headers_for(code)
    if "security" in op:
        op["security"] = [{"bearer": []}, {"apiKey": []}] if keys_on else [{"bearer": []}, {"apiKey": []}, {}]


def _set_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The spec's maxima as this server enforces them (the lower of the spec's and the server's)."""
    caps = {
        ("Options", "max_iterations"): settings.max_iterations,
        ("Options", "time_limit_s"): settings.max_time_limit_s,
        ("Options", "points"): settings.max_collocation_points,
        ("Output", "points"): settings.max_sample_points,
    }
    for (model, field), cap in caps.items():
        prop = schemas.get(model, {}).get("properties", {}).get(field)
        if prop is not None:
            prop["maximum"] = min(prop.get("maximum", cap), cap)
            prop["description"] = f"{prop.get('description', '')} At most {cap:g} on this server.".strip()
    x = schemas.get("Output", {}).get("properties", {}).get("x")
    if x is not None:
        for option in x.get("anyOf", []):
            if option.get("type") == "array":
                option["maxItems"] = settings.max_sample_points


def limits_text(settings: Settings) -> str:
    keys = "required (bearer or X-API-Key)" if settings.api_keys or settings.api_keys_file else "not required"
    return (
        "This server's limits: "
        f"options.max_iterations ≤ {settings.max_iterations}, options.time_limit_s ≤ {settings.max_time_limit_s:g}, "
        f"options.points ≤ {settings.max_collocation_points}, output points ≤ {settings.max_sample_points}, "
        f"network parameters ≤ {settings.max_network_parameters}, request body ≤ {settings.max_body_bytes} bytes. "
        f"API keys: {keys}. Errors are RFC 9457 application/problem+json."
    )


def _deref(node: Any, schemas: dict[str, Any], used: set[str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            used.add(name)
            return _deref(schemas[name], schemas, used)
        return {k: _deref(v, schemas, used) for k, v in node.items()}
    if isinstance(node, list):
        return [_deref(v, schemas, used) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _inline_request_bodies(document: dict[str, Any]) -> None:
    """Request bodies are written inline, so generators see them as input: a field with a
    default may be left out (openapi-typescript makes such fields required in shared schemas)."""
    schemas = document["components"]["schemas"]
    inlined: set[str] = set()
    for item in document["paths"].values():
        for op in item.values():
            for media in op.get("requestBody", {}).get("content", {}).values():
                media["schema"] = _deref(media["schema"], schemas, inlined)
    still_used = _refs(document["paths"]) | _refs({k: v for k, v in schemas.items() if k not in inlined})
    for name in inlined - still_used:
        del schemas[name]


def complete(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``document`` (FastAPI's) made to say what this server does; changed in place and returned."""
    keys_on = bool(settings.api_keys or settings.api_keys_file)
    for item in document.get("paths", {}).values():
        for method, op in item.items():
            _complete_operation(method, op, keys_on)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body: never sent
        schemas.pop(unused, None)
    _set_limits(schemas, settings)
    _inline_request_bodies(document)
    document["info"]["description"] = limits_text(settings)
    return document
