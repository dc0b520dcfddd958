"""The FastAPI application: routes, body-size limit, problem+json errors."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from redis import Redis
from rq import Queue
from starlette.types import ASGIApp, Receive, Scope, Send

from odeserve import __version__
from odeserve.problem import analyse
from odeserve.spec import ProblemSpec
from service import auth, jobs
from service.errors import ApiError, install_handlers, problem_response, responses
from service.limits import enforce_limits
from service.logs import RequestIdMiddleware, configure_logging
from service.metrics import Metrics
from service.schemas import Health, Job, Ready, Solution
from service.settings import Settings, get_settings
from worker import artifacts
from worker.queueing import make_queue


class BodyLimit:
    """413 for bodies over the limit, by header or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request as StarletteRequest

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"request body is over the limit of {self.max_bytes} bytes"
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await problem_response(StarletteRequest(scope), 413, "Content Too Large", too_big)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "Content Too Large", too_big)
            return message

        await self.app(scope, counted, send)


def _queue(request: Request) -> Queue:
    return request.app.state.queue


def _owner(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (when keys are on)")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key (alternative to Authorization)")] = None,
) -> str:
    return request.app.state.keys.owner(authorization, x_api_key)


QueueDep = Annotated[Queue, Depends(_queue)]
OwnerDep = Annotated[str, Depends(_owner)]


def _owned(q: Queue, job_id: str, owner: str):
    job = jobs.fetch(q, job_id)
    auth.check_owner(job, owner)
    return job


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    # The client connects lazily, so building it here costs nothing and the app also works
    # under transports that skip the lifespan; the lifespan closes it.
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        redis.close()

    app = FastAPI(
        title="odeserve",
        version=__version__,
        summary="Ordinary differential equations solved on demand by physics-informed neural networks.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.redis = redis
    app.state.queue = make_queue(redis, settings)
    app.state.keys = auth.KeyRing.from_settings(settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    metrics = Metrics(app.state.queue, settings)
    app.add_middleware(RequestIdMiddleware, on_done=metrics.observe_request)
    install_handlers(app)

    @app.post(
        "/solve",
        status_code=202,
        response_model=Job,
        name="submit_problem",
        responses=responses(401, 413, 422, 429, 503),
    )
    def submit_problem(
        spec: ProblemSpec,
        q: QueueDep,
        owner: OwnerDep,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                description="Retry-safe submits: the same key and body return the same job; "
                "the same key with another body is a 422."
            ),
        ] = None,
    ) -> Job:
        """Validate a problem (spec v1) and queue it. Answers 202 with the job and its Location."""
        problem = analyse(spec)
        enforce_limits(problem, settings)
        reservation = None
        if idempotency_key is not None:
            reservation = jobs.reserve_idempotency(q, idempotency_key, problem, settings, owner)
        if reservation is not None and not reservation.new:
            job = _owned(q, reservation.job_id, owner)
        else:
            try:
                auth.enforce_quotas(q.connection, owner, settings, q.serializer)
                job = jobs.enqueue(q, problem, settings, reservation.job_id if reservation else None, owner)
            except Exception:
                # Nothing was queued (quota, Redis): free the key so a retry can succeed.
                if reservation is not None:
                    jobs.release_idempotency(q, reservation)
                raise
            auth.record_active(q.connection, owner, job.id, settings)
        response.headers["Location"] = f"/jobs/{job.id}"
        response.headers["Retry-After"] = "1"
        return jobs.describe(job)

    @app.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=responses(401, 404, 422, 503))
    def get_job(job_id: str, q: QueueDep, owner: OwnerDep) -> Job:
        """Status, progress, outcome and metrics of a job."""
        job = _owned(q, job_id, owner)
        if job.get_status(refresh=False) == "started":
            jobs.reap_abandoned(q)
            job.refresh()
        return jobs.describe(job)

    @app.delete(
        "/jobs/{job_id}",
        status_code=202,
        response_model=Job,
        name="cancel_job",
        responses=responses(401, 404, 409, 422, 503),
    )
    def cancel_job(job_id: str, q: QueueDep, owner: OwnerDep) -> Job:
        """Cancel: a queued job at once, a running one at its next check (about a second)."""
        job = _owned(q, job_id, owner)
        jobs.cancel(q, job, settings)
        job.refresh()
        return jobs.describe(job)

    @app.get(
        "/jobs/{job_id}/solution",
        response_model=Solution,
        name="get_solution",
        responses={**responses(401, 404, 409, 422, 503), 200: {"content": {"text/csv": {}}}},
    )
    def get_solution(
        job_id: str, q: QueueDep, owner: OwnerDep, format: Literal["json", "csv"] = Query("json")
    ) -> Response:
        """Samples on the output grid: values, derivatives and residuals (JSON or CSV)."""
        data = jobs.solution(q, _owned(q, job_id, owner))
        if format == "json":
            return JSONResponse(data)
        columns = [data["variable"], *data["values"], *data["derivatives"], *data["residuals"]]
        series = [data["x"], *data["values"].values(), *data["derivatives"].values(), *data["residuals"].values()]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*series))
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
        )

    @app.get(
        "/jobs/{job_id}/model",
        name="get_model",
        response_class=Response,  # bytes, not JSON: keeps application/json out of the 200 response
        responses={
            **responses(401, 404, 409, 422, 503),
            200: {
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "The model file (TorchScript .pt or torch.export .pt2).",
            },
        },
    )
    def get_model(
        job_id: str, q: QueueDep, owner: OwnerDep, format: Literal["torchscript", "export"] = Query("torchscript")
    ) -> Response:
        """The trained model: TorchScript (default) or a torch.export program (format=export)."""
        name, ext = (artifacts.TORCHSCRIPT, "pt") if format == "torchscript" else (artifacts.EXPORT, "pt2")
        data = jobs.artifact(q, _owned(q, job_id, owner), name)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.{ext}"'},
        )

    @app.get(
        "/metrics",
        name="metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}, **responses(503)},
    )
    def get_metrics(owner: OwnerDep) -> PlainTextResponse:
        """Prometheus metrics: HTTP per route and status, queue depth, running jobs, workers,
        job outcomes and durations."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", response_model=Health, name="health")
    def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, name="ready", responses=responses(503))
    def ready(q: QueueDep) -> Ready:
        """Readiness: Redis answers and at least one worker is alive."""
        q.connection.ping()
        workers = jobs.live_workers(q, settings)
        if workers < 1:
            raise ApiError(503, "Service Unavailable", "no worker is running", headers={"Retry-After": "5"})
        return Ready(status="ready", workers=workers, queued=q.count)

    return app


def app_factory() -> FastAPI:
    """Entry point for uvicorn --factory: JSON logs, settings from the environment."""
    configure_logging()
    return create_app()
