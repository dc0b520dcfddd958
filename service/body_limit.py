"""413 for request bodies over the limit, by header or by counting the stream.

A body without Content-Length (chunked) is counted as it arrives: once it passes the limit,
the 413 is sent from here and the application sees the client as gone, so its own answer (it
would report a broken body as 422) is never sent.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem_response


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"request body is over the limit of {self.max_bytes} bytes"
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await problem_response(Request(scope), 413, "Content Too Large", too_big)(scope, receive, send)
            return
        seen = 0
        state = {"refused": False, "started": False}

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 has been sent: drop the application's answer
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        async def counted() -> Message:
            nonlocal seen
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not state["started"]:
                    response = problem_response(Request(scope), 413, "Content Too Large", too_big)
                    await response(scope, receive, send)
                    state["refused"] = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, guarded_send)
