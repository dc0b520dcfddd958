"""``POST /solve``: validate a problem and queue it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from odeserve.problem import analyse
from odeserve.spec import ProblemSpec
from service import auth, idempotency, jobs, quota
from service.context import Context, Owner
from service.errors import responses
from service.limits import enforce_limits
from service.schemas import Job

router = APIRouter()

IdempotencyKey = Annotated[
    str | None,
    Header(
        description="Retry-safe submits: the same key and body return the same job; "
        "the same key with another body is a 422."
    ),
]


@router.post(
    "/solve",
    status_code=202,
    response_model=Job,
    name="submit_problem",
    responses=responses(401, 409, 413, 415, 422, 429, 503),
)
def submit_problem(
    spec: ProblemSpec, ctx: Context, owner: Owner, response: Response, idempotency_key: IdempotencyKey = None
) -> Job:
    """Validate a problem (spec v1) and queue it. Answers 202 with the job and its Location."""
    problem = analyse(spec)
    enforce_limits(problem, ctx.settings)
    job_id = jobs.new_job_id()
    reservation = None
    if idempotency_key is not None:
        reservation = idempotency.reserve(ctx.redis, idempotency_key, problem, owner, job_id, ctx.settings.result_ttl_s)
        job_id = reservation.job_id
    if reservation is not None and not reservation.new:
        job = jobs.fetch(ctx.queue, job_id)
        auth.check_owner(job, owner)
    else:
        try:
            level = quota.reserve(ctx.redis, owner, job_id, ctx.settings)
            job = jobs.enqueue(ctx.queue, problem, ctx.settings, job_id, owner, level)
        except Exception:
            # Nothing was queued (quota, Redis): free the key so a retry can succeed.
            if reservation is not None:
                idempotency.release(ctx.redis, reservation)
            raise
    response.headers["Location"] = f"/jobs/{job.id}"
    response.headers["Retry-After"] = "1"
    return jobs.describe(job)
