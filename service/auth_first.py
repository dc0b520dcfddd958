"""With API keys on, a request that carries a body is authenticated before its body is read, so
a client without a valid key gets 401, never a 422 about a body it had no right to send."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import KeyRing
from service.errors import ApiError, problem_response

#: Methods whose requests carry a body (the others have nothing to validate before the route's
#: own authentication runs).
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class AuthFirst:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope.get("method") in _WITH_BODY:
            request = Request(scope)
            auth = request.headers.get("authorization", "")
            bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            try:
                self.keys.owner(bearer, request.headers.get("x-api-key"))
            except ApiError as exc:
                response = problem_response(request, exc.status, exc.title, exc.detail, exc.field, exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
