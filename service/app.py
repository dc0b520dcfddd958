"""The FastAPI application: middleware, error mapping and the routers, built per settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from common.logs import configure_logging
from common.settings import Settings, get_settings
from odeserve import __version__
from service.auth_first import AuthFirst
from service.body_limit import BodyLimit
from service.context import AppContext
from service.errors import install_handlers
from service.logs import RequestIdMiddleware
from service.metrics import Metrics
from service.openapi import complete
from service.routers import jobs, ops, playground, problems, results


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    ctx = AppContext.build(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.redis.close()
        await ctx.async_redis.aclose()

    app = FastAPI(
        title="odeserve",
        version=__version__,
        summary="Ordinary differential equations solved on demand by physics-informed neural networks.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.context = ctx
    app.state.metrics = Metrics(ctx.queue, ctx.settings)
    app.add_middleware(AuthFirst, keys=ctx.keys, router=app.router)  # 401 before the body is read (and 422'd)
    app.add_middleware(BodyLimit, max_bytes=ctx.settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware, on_done=app.state.metrics.observe_request)
    install_handlers(app)
    render = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(render(), ctx.settings)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    for router in (problems.router, jobs.router, results.router, ops.router, playground.router):
        app.include_router(router)
    return app


def app_factory() -> FastAPI:
    """Entry point for uvicorn --factory: JSON logs, settings from the environment (Redis required)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level, settings.log_file)
    settings.require_redis_url()
    return create_app(settings)
