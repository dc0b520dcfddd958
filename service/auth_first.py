"""With API keys on, a request that carries a body to one of the API's routes is authenticated
before its body is read, so a client without a valid key gets 401, never a 422 about a body it
had no right to send. A method or path no route takes is left to the router (405 or 404)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import KeyRing
from service.errors import ApiError, problem_response

#: Methods whose requests carry a body (the others have nothing to validate before the route's
#: own authentication runs).
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class AuthFirst:
    def __init__(self, app: ASGIApp, keys: KeyRing, router: Router) -> None:
        self.app = app
        self.keys = keys
        self.router = router

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self.router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope.get("method") in _WITH_BODY and self._routed(scope):
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
