"""What every route needs, built once per app (no module globals): settings, Redis, the queue,
the key ring and the artifact store; and the dependencies that hand them to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq import Queue

from common.queue import make_queue
from common.settings import Settings
from common.store import ArtifactStore
from service.auth import KeyRing


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    redis: Redis
    async_redis: AsyncRedis  # pub/sub of live job events (SSE)
    queue: Queue
    keys: KeyRing
    store: ArtifactStore

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        # The client connects lazily: building it costs nothing, and rendering the OpenAPI
        # document needs no server. The app's lifespan closes it.
        url = settings.redis_url or "redis://127.0.0.1:6379/0"
        redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10)
        return cls(
            settings=settings,
            redis=redis,
            async_redis=AsyncRedis.from_url(url, socket_connect_timeout=2, health_check_interval=10),
            queue=make_queue(redis, settings),
            keys=KeyRing.from_settings(settings),
            store=ArtifactStore.from_settings(redis, settings),
        )


def _context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.context
    return ctx


Context = Annotated[AppContext, Depends(_context)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key as a bearer token, when the server has keys configured (ODESERVE_API_KEYS).",
)
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="The API key (alternative to bearer)."
)


def _owner(
    ctx: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> str:
    return ctx.keys.owner(bearer.credentials if bearer else None, api_key)


Owner = Annotated[str, Depends(_owner)]

#: ``?member=i``: which member of a sweep (required for a sweep's results, absent otherwise).
Member = Annotated[
    int | None,
    Query(
        ge=0, description="A sweep's member (0-based, as in the job's members); required for a sweep, absent otherwise."
    ),
]
