"""``/jobs/{id}``: status, cancel, the loss history and the live event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from common import keys
from common.keys import Artifact
from common.records import JobEvent
from service import auth, events, jobs
from service.context import AppContext, Context, Member, Owner
from service.errors import responses
from service.schemas import HistoryPoint, Job

router = APIRouter()


def owned(ctx: AppContext, job_id: str, owner: str) -> RQJob:
    job = jobs.fetch(ctx.queue, job_id)
    auth.check_owner(job, owner)
    return job


def current(ctx: AppContext, job: RQJob) -> Job:
    """The job as the API shows it, after settling it if its worker died."""
    if job.get_status(refresh=False) == RQStatus.STARTED:
        jobs.reap_abandoned(ctx.queue)
        job.refresh()
    return jobs.describe(job)


@router.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=responses(401, 404, 503))
def get_job(job_id: str, ctx: Context, owner: Owner) -> Job:
    """Status, progress, outcome and metrics of a job."""
    return current(ctx, owned(ctx, job_id, owner))


@router.delete(
    "/jobs/{job_id}",
    status_code=202,
    response_model=Job,
    name="cancel_job",
    responses=responses(401, 404, 409, 503),
)
def cancel_job(job_id: str, ctx: Context, owner: Owner) -> Job:
    """Cancel: a queued job at once, a running one at its next check (about a second)."""
    job = owned(ctx, job_id, owner)
    jobs.cancel(ctx.queue, ctx.store, job)
    job.refresh()
    described = jobs.describe(job)
    if described.status == "canceled":  # a queued job: its event streams end now
        ctx.redis.publish(keys.events(job.id), JobEvent(kind="end").model_dump_json())
    return described


@router.get(
    "/jobs/{job_id}/history",
    response_model=list[HistoryPoint],
    name="get_history",
    responses=responses(401, 404, 409, 422, 503),
)
def get_history(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """The loss per iteration (at most 2,000 entries, evenly thinned; the last one kept); a
    sweep's member's with ``?member=i``."""
    data = jobs.artifact(ctx.store, owned(ctx, job_id, owner), Artifact.HISTORY, member)
    return Response(data, media_type="application/json")


LastEventId = Annotated[
    str | None, Header(description="Resume: progress up to this event id (an iteration) is not sent again.")
]


@router.get(
    "/jobs/{job_id}/events",
    name="get_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `status` (the job, on each status change), `progress` "
            "(iteration, loss, elapsed_s, eta_s, phase; the id is the iteration) and `end` (the final job; "
            "the stream then closes). Works with `curl -N` and the browser's EventSource.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **responses(401, 404, 503),
    },
)
def get_events(job_id: str, ctx: Context, owner: Owner, last_event_id: LastEventId = None) -> StreamingResponse:
    """Live progress and status changes of a job, ending with the final job."""
    job = owned(ctx, job_id, owner)

    def describe() -> Job:
        job.refresh()
        return current(ctx, job)

    body = events.stream(ctx.async_redis, job.id, describe, events.parse_last_id(last_event_id))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
