"""A finished job's results, one path per representation: samples as JSON or CSV, the model as
TorchScript or torch.export, and the figure as PNG or SVG. A diverged job has none of them (409
with the reason); its loss history stays at ``/jobs/{id}/history``."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from rq.job import Job as RQJob

from common.keys import Artifact
from odeserve.problem import load_problem
from service import jobs
from service.context import AppContext, Context, Member, Owner
from service.errors import ApiError, responses
from service.routers.jobs import owned
from service.samples_csv import to_csv
from service.schemas import HistoryPoint, Solution

router = APIRouter()

_ERRORS = responses(401, 404, 409, 422, 503)


def _result(ctx: AppContext, job_id: str, owner: str, name: Artifact, member: int | None) -> tuple[RQJob, bytes]:
    """A stored result of a usable run; 409 with the reason for a diverged or unfinished one."""
    job = owned(ctx, job_id, owner)
    jobs.check_member(job, member)
    described = jobs.describe(job)
    if member is not None and described.members is not None and member < len(described.members):
        if described.members[member].outcome.value == "diverged":
            raise ApiError(409, "Conflict", f"member {member} of job {job.id} diverged: it has no usable result")
    elif described.error is not None and described.error.type == "diverged":
        raise ApiError(
            409,
            "Conflict",
            f"job {job.id} diverged ({described.error.detail}): it has no usable solution, model or plot; "
            f"its loss history is at /jobs/{job.id}/history",
        )
    return job, jobs.artifact(ctx.store, job, name, member)


def _samples(ctx: AppContext, job_id: str, owner: str, member: int | None) -> Solution:
    return Solution.model_validate_json(_result(ctx, job_id, owner, Artifact.SAMPLES, member)[1])


def _file(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _csv_response(job_id: str, solution: Solution) -> Response:
    return _file(to_csv(solution).encode(), "text/csv; charset=utf-8", f"{job_id}.csv")


@router.get("/jobs/{job_id}/solution", response_model=Solution, name="get_solution", responses=_ERRORS)
def get_solution(
    job_id: str,
    ctx: Context,
    owner: Owner,
    member: Member = None,
    format: Literal["json", "csv"] = Query("json", include_in_schema=False),  # before /solution.csv
) -> Response:
    """Samples on the output grid: values, derivatives and residuals. Non-finite numbers are
    null and listed in `non_finite` with where and why."""
    solution = _samples(ctx, job_id, owner, member)
    if format == "csv":
        return _csv_response(job_id, solution)
    return JSONResponse(solution.model_dump(mode="json"))


_CSV_DOC = (
    "The samples as CSV: a header row (the variable, the unknowns, the derivatives, the residuals) "
    "and one row per point. A non-finite value is an empty cell; then a last column `non_finite` "
    "names, per row, the columns left empty and why (nan, inf, -inf)."
)


@router.get(
    "/jobs/{job_id}/solution.csv",
    name="get_solution_csv",
    response_class=Response,
    responses={200: {"description": _CSV_DOC, "content": {"text/csv": {"schema": {"type": "string"}}}}, **_ERRORS},
)
def get_solution_csv(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """Samples on the output grid as CSV."""
    return _csv_response(job_id, _samples(ctx, job_id, owner, member))


def _binary(description: str) -> dict[int | str, dict[str, Any]]:
    content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {200: {"description": description, "content": content}, **_ERRORS}


@router.get(
    "/jobs/{job_id}/model.pt",
    name="get_model_torchscript",
    response_class=Response,
    responses=_binary("The TorchScript model (load with torch.jit.load)."),
)
def get_model_torchscript(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """The trained model as TorchScript: x (N, 1) float64 -> (N, m) (a parametric model: (N, 1 + P));
    `derivative(x, k)` too."""
    job, data = _result(ctx, job_id, owner, Artifact.TORCHSCRIPT, member)
    return _file(data, "application/octet-stream", _name(job.id, member, "pt"))


@router.get(
    "/jobs/{job_id}/model.pt2",
    name="get_model_export",
    response_class=Response,
    responses=_binary("The torch.export program (load with torch.export.load)."),
)
def get_model_export(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """The trained model as a torch.export program."""
    job, data = _result(ctx, job_id, owner, Artifact.EXPORT, member)
    return _file(data, "application/octet-stream", _name(job.id, member, "pt2"))


def _name(job_id: str, member: int | None, suffix: str) -> str:
    return f"{job_id}.{suffix}" if member is None else f"{job_id}-{member}.{suffix}"


@router.get("/jobs/{job_id}/model", include_in_schema=False)
def get_model(
    job_id: str,
    ctx: Context,
    owner: Owner,
    member: Member = None,
    format: Literal["torchscript", "export"] = Query("torchscript"),
) -> Response:
    """Earlier path of the two model representations (kept for existing clients)."""
    if format == "export":
        return get_model_export(job_id, ctx, owner, member)
    return get_model_torchscript(job_id, ctx, owner, member)


async def _plot(ctx: AppContext, job_id: str, owner: str, fmt: Literal["png", "svg"], member: int | None) -> Response:
    def draw() -> bytes:
        from odeserve.parametric import fixed_at
        from odeserve.plot import figure  # numpy and matplotlib load on the first plot, not at startup

        job, samples = _result(ctx, job_id, owner, Artifact.SAMPLES, member)
        stored = jobs.artifact(ctx.store, job, Artifact.HISTORY, member)
        history = [HistoryPoint.model_validate(h) for h in json.loads(stored)]
        described = jobs.describe(job)
        problem = load_problem(job.args[0])
        outcome = described.outcome.value if described.outcome else ""
        if member is not None:  # a sweep's member: its own plain problem and outcome
            problem = fixed_at(problem, problem.sweep[member])
            outcome = described.members[member].outcome.value if described.members else outcome
        solution = Solution.model_validate_json(samples)
        return figure(problem, solution, history, outcome, fmt)

    data = await asyncio.to_thread(draw)  # matplotlib is slow and blocking: off the event loop
    return Response(data, media_type="image/png" if fmt == "png" else "image/svg+xml")


_PLOT_DOC = "The solution and its derivatives (with the exact solution when given), |residual| and the loss history."


@router.get(
    "/jobs/{job_id}/plot.png",
    name="get_plot_png",
    response_class=Response,
    responses={
        200: {"description": _PLOT_DOC, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        **_ERRORS,
    },
)
async def get_plot_png(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """The job's figure as PNG (the same figure as `odeserve solve --plot`)."""
    return await _plot(ctx, job_id, owner, "png", member)


@router.get(
    "/jobs/{job_id}/plot.svg",
    name="get_plot_svg",
    response_class=Response,
    responses={
        200: {"description": _PLOT_DOC, "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
        **_ERRORS,
    },
)
async def get_plot_svg(job_id: str, ctx: Context, owner: Owner, member: Member = None) -> Response:
    """The job's figure as SVG."""
    return await _plot(ctx, job_id, owner, "svg", member)
