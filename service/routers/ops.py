"""Operations: Prometheus metrics, liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from service import jobs
from service.context import Context, Owner
from service.errors import ApiError, responses
from service.schemas import Health, Ready

router = APIRouter()


@router.get(
    "/metrics",
    name="metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format 0.0.4: odeserve_http_requests_total, "
            "odeserve_http_request_seconds, odeserve_queue_depth, odeserve_jobs_running, odeserve_workers, "
            "odeserve_job_outcomes_total, odeserve_job_duration_seconds.",
        },
        **responses(401, 503),
    },
)
def get_metrics(request: Request, owner: Owner) -> PlainTextResponse:
    """Prometheus metrics: HTTP per route and status, queue depth, running jobs, workers,
    job outcomes and durations."""
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/healthz", response_model=Health, name="health")
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, name="ready", responses=responses(503))
def ready(ctx: Context) -> Ready:
    """Readiness: Redis answers and at least one worker is alive."""
    ctx.redis.ping()
    workers = jobs.live_workers(ctx.queue, ctx.settings)
    if workers < 1:
        raise ApiError(503, "Service Unavailable", "no worker is running", headers={"Retry-After": "5"})
    return Ready(status="ready", workers=workers, queued=ctx.queue.count)
