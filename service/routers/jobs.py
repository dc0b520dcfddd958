"""``/jobs/{id}``: status, cancel, and the results (samples, model, loss history)."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from common.keys import Artifact
from service import auth, jobs
from service.context import AppContext, Context, Owner
from service.errors import responses
from service.schemas import HistoryPoint, Job, Solution

router = APIRouter()


def _owned(ctx: AppContext, job_id: str, owner: str) -> RQJob:
    job = jobs.fetch(ctx.queue, job_id)
    auth.check_owner(job, owner)
    return job


@router.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=responses(401, 404, 422, 503))
def get_job(job_id: str, ctx: Context, owner: Owner) -> Job:
    """Status, progress, outcome and metrics of a job."""
    job = _owned(ctx, job_id, owner)
    if job.get_status(refresh=False) == RQStatus.STARTED:
        jobs.reap_abandoned(ctx.queue)
        job.refresh()
    return jobs.describe(job)


@router.delete(
    "/jobs/{job_id}",
    status_code=202,
    response_model=Job,
    name="cancel_job",
    responses=responses(401, 404, 409, 422, 503),
)
def cancel_job(job_id: str, ctx: Context, owner: Owner) -> Job:
    """Cancel: a queued job at once, a running one at its next check (about a second)."""
    job = _owned(ctx, job_id, owner)
    jobs.cancel(ctx.queue, ctx.store, job)
    job.refresh()
    return jobs.describe(job)


def _csv(solution: dict) -> str:
    columns = [solution["variable"], *solution["values"], *solution["derivatives"], *solution["residuals"]]
    series = [
        solution["x"],
        *solution["values"].values(),
        *solution["derivatives"].values(),
        *solution["residuals"].values(),
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*series))
    return buf.getvalue()


@router.get(
    "/jobs/{job_id}/solution",
    response_model=Solution,
    name="get_solution",
    responses={**responses(401, 404, 409, 422, 503), 200: {"content": {"text/csv": {}}}},
)
def get_solution(job_id: str, ctx: Context, owner: Owner, format: Literal["json", "csv"] = Query("json")) -> Response:
    """Samples on the output grid: values, derivatives and residuals (JSON or CSV)."""
    data = json.loads(jobs.artifact(ctx.store, _owned(ctx, job_id, owner), Artifact.SAMPLES))
    if format == "json":
        return JSONResponse(data)
    return Response(
        _csv(data),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
    )


@router.get(
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
    job_id: str, ctx: Context, owner: Owner, format: Literal["torchscript", "export"] = Query("torchscript")
) -> Response:
    """The trained model: TorchScript (default) or a torch.export program (format=export)."""
    name, ext = (Artifact.TORCHSCRIPT, "pt") if format == "torchscript" else (Artifact.EXPORT, "pt2")
    data = jobs.artifact(ctx.store, _owned(ctx, job_id, owner), name)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{ext}"'},
    )


@router.get(
    "/jobs/{job_id}/history",
    response_model=list[HistoryPoint],
    name="get_history",
    responses=responses(401, 404, 409, 422, 503),
)
def get_history(job_id: str, ctx: Context, owner: Owner) -> Response:
    """The loss per iteration (at most 2,000 entries, evenly thinned; the last one kept)."""
    data = jobs.artifact(ctx.store, _owned(ctx, job_id, owner), Artifact.HISTORY)
    return Response(data, media_type="application/json")
