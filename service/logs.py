"""Structured JSON logs, and the request id that follows a job from the API into the worker.

Every API request gets an id (the client's ``X-Request-ID`` when it is well formed, else a new
one), returned in the response header, logged with the request, stored with any job it creates
and logged again by the worker that runs the job. Torch-free.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

#: The current request's id (set by the middleware, read when a job is enqueued).
request_id: ContextVar[str | None] = ContextVar("odeserve_request_id", default=None)
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FIELDS = ("request_id", "job_id", "method", "path", "status", "duration_ms", "outcome", "device", "iterations")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the known context fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        for name in _FIELDS[1:]:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def new_request_id(given: str | None) -> str:
    return given if given and _VALID.fullmatch(given) else secrets.token_hex(8)


class RequestIdMiddleware:
    """Assigns the request id, echoes it as ``X-Request-ID``, logs the request and hands its
    status and duration to ``on_done`` (the metrics), so each request is timed once."""

    def __init__(self, app: ASGIApp, on_done: Callable[[Scope, str, int, float], None] | None = None) -> None:
        self.app = app
        self.on_done = on_done
        self.log = logging.getLogger("odeserve.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = new_request_id(request.headers.get("x-request-id"))
        token = request_id.set(rid)
        start = time.perf_counter()
        status = {"code": 500}

        async def with_header(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, with_header)
        finally:
            seconds = time.perf_counter() - start
            self.log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": request.method,
                    "path": request.url.path,
                    "status": status["code"],
                    "duration_ms": round(seconds * 1e3, 2),
                },
            )
            if self.on_done is not None:
                self.on_done(scope, request.method, status["code"], seconds)
            request_id.reset(token)
