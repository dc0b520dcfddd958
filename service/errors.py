"""RFC 9457 problem details, mapped once: core errors and HTTP errors become problem+json."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from odeserve.errors import SpecError, field_path, pydantic_loc

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("odeserve.service")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field("about:blank", description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="The offending field, e.g. equations[0].")
    instance: str | None = None


class ApiError(Exception):
    def __init__(
        self, status: int, title: str, detail: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.headers = headers
        super().__init__(detail)


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "Not Found", f"no job with id {job_id!r} (it may have expired)")


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, field=field, instance=request.url.path)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _validation_field(loc: tuple[Any, ...]) -> str:
    return field_path(pydantic_loc(loc, drop=("body", "query", "path"))) or "body"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(request, exc.status, exc.title, exc.detail, exc.field, exc.headers)


async def _spec_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return problem_response(request, 422, "Invalid problem", exc.message, exc.field)


def _json_content_type(value: str | None) -> bool:
    media = (value or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _content_type_problem(request: Request, err: dict[str, Any]) -> JSONResponse | None:
    """A body that failed because of its Content-Type, said as such (415): curl's ``-d`` sends
    application/x-www-form-urlencoded, and a body without a Content-Type is not read as JSON."""
    if not err.get("loc") or err["loc"][0] != "body":
        return None
    sent = request.headers.get("content-type")
    if sent and _json_content_type(sent):
        return None
    got = f"got {sent.split(';')[0].strip()!r}" if sent else "none was sent"
    detail = f"Content-Type must be application/json ({got})"
    return problem_response(request, 415, "Unsupported Media Type", detail, "Content-Type")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    wrong_type = _content_type_problem(request, dict(err))
    if wrong_type is not None:
        return wrong_type
    field = _validation_field(tuple(err.get("loc", ())))
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif err.get("type") == "json_invalid":
        msg = f"body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        field = "body"
    return problem_response(request, 422, "Invalid problem", f"{field}: {msg[0].lower() + msg[1:]}", field)


_TITLES = {
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method of the resource: Starlette's 405 names only the first route's (GET
    /jobs/{id} and DELETE /jobs/{id} are two routes). Asks the router which methods match."""
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in request.app.router.routes)
    ]
    return ", ".join(m for m in allowed if m != "HEAD")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8): an invalid body,
        # reported like every other one.
        return problem_response(request, 422, "Invalid problem", "body: could not be parsed as UTF-8 JSON", "body")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    title = _TITLES.get(exc.status_code, "Error")
    return problem_response(request, exc.status_code, title, str(exc.detail), headers=headers or None)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return problem_response(
        request,
        503,
        "Service Unavailable",
        "the job store (Redis) is unreachable; retry shortly",
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - bugs only
    log.exception("unexpected error")
    return problem_response(request, 500, "Internal Server Error", "an unexpected error occurred; it was logged")


def install_handlers(app: FastAPI) -> None:
    """Every error becomes problem+json, mapped here and nowhere else."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_error)
    app.add_exception_handler(RedisTimeoutError, _redis_error)
    app.add_exception_handler(Exception, _unexpected)


#: What each problem status means, for the OpenAPI document.
PROBLEM_STATUSES: dict[int, str] = {
    401: "Missing or unknown API key (when keys are configured).",
    404: "Unknown job (or a job of another key).",
    405: "Method not allowed on this path; see Allow.",
    409: "The job has not finished, ended without this result, or diverged; on POST /solve: a request "
    "with the same Idempotency-Key is still creating its job, see Retry-After (the detail says which).",
    413: "Request body too large.",
    415: "The body is not sent as application/json.",
    422: "Invalid problem or parameter.",
    429: "Over a quota; see Retry-After.",
    503: "Redis is unreachable, or the service is not ready; see Retry-After.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give (only problem+json is sent;
    the schema and headers are completed by ``service.openapi``)."""
    return {
        s: {
            "description": PROBLEM_STATUSES[s],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }
