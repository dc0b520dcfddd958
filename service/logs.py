"""The request-id middleware: assigns each request its id, echoes it, logs and times the request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.logs import new_request_id, request_id


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

        async def with_header(message: Message) -> None:
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
