"""Results through the real stack: non-finite values (issue 10.5), a diverged job's results, the
live event stream, the plots, and Content-Type errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.test_service import finish

SINC = {
    "equations": ["y' = sin(x)/x"],
    "domain": [-1, 1],
    "conditions": ["y(-1) = 0"],
    "output": {"points": 11, "derivatives": 1},
    "options": {"max_iterations": 30},
}
DIVERGING = {
    "equations": ["y' = log(x - 2)"],
    "domain": [0, 1],
    "conditions": ["y(0) = 1"],
    "output": {"points": 5},
    "options": {"max_iterations": 20},
}
SMALL = {
    "equations": ["y' = -y"],
    "domain": [0, 1],
    "conditions": ["y(0) = 1"],
    "output": {"points": 21, "derivatives": 1},
    "options": {"max_iterations": 300},
}


def submit(client, spec: dict) -> dict:
    r = client.post("/solve", json=spec)
    assert r.status_code == 202, r.text
    return finish(client, r.json()["id"])


def test_non_finite_values_are_null_with_where_and_why(service) -> None:
    job = submit(service, SINC)
    assert job["status"] == "succeeded", job
    residual = job["metrics"]["residual"]["equations[0]"]
    assert residual["max_abs"] is None and residual["rms"] is None  # the metric grid holds x = 0
    fields = {e["field"] for e in job["metrics"]["non_finite"]}
    assert "residual.equations[0].max_abs" in fields

    r = service.get(f"/jobs/{job['id']}/solution")
    assert r.status_code == 200
    sol = r.json()
    zero = sol["x"].index(0.0)
    assert sol["residuals"]["equations[0]"][zero] is None
    assert sol["values"]["y"][zero] is not None
    (entry,) = sol["non_finite"]
    assert entry["field"] == "residuals.equations[0]" and entry["indices"] == [zero] and entry["kinds"] == ["nan"]
    assert "singular" in entry["reason"]

    text = service.get(f"/jobs/{job['id']}/solution.csv").text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["x", "y", "y'", "equations[0]", "non_finite"]
    assert rows[1 + zero][3] == "" and rows[1 + zero][4] == "equations[0]:nan"
    assert all(row[4] == "" for i, row in enumerate(rows[1:]) if i != zero)


def test_a_diverged_job_answers_409_with_the_reason(service) -> None:
    job = submit(service, DIVERGING)
    assert job["status"] == "failed" and job["error"]["type"] == "diverged", job
    assert job["progress"]["loss"] is None or isinstance(job["progress"]["loss"], float)
    for path in ("solution", "solution.csv", "model.pt", "model.pt2", "plot.png", "plot.svg", "model"):
        r = service.get(f"/jobs/{job['id']}/{path}")
        assert r.status_code == 409, (path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "diverged" in r.json()["detail"] and "nan" in r.json()["detail"]
    history = service.get(f"/jobs/{job['id']}/history")
    assert history.status_code == 200
    json.loads(history.text)  # valid JSON: a non-finite loss is null


def _events(client, job_id: str, **headers: str) -> list[tuple[str | None, str, dict]]:
    out: list[tuple[str | None, str, dict]] = []
    with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "" and "event" in event:
                out.append((event.get("id"), event["event"], json.loads(event["data"])))
                event = {}
            elif line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                event[key] = value
    return out


def test_event_stream_reports_progress_and_ends_with_the_final_job(service) -> None:
    r = service.post("/solve", json=SMALL | {"options": {"max_iterations": 3000, "adam_iterations": 2000}})
    job_id = r.json()["id"]
    events = _events(service, job_id)
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "end", kinds
    final = events[-1][2]
    assert final["status"] == "succeeded" and final["id"] == job_id and final["metrics"]["iterations"] > 0
    progress = [(eid, data) for eid, kind, data in events if kind == "progress"]
    assert progress, kinds
    its = [data["iteration"] for _, data in progress]
    assert its == sorted(its) and all(eid == str(data["iteration"]) for eid, data in progress)
    assert {"iteration", "loss", "elapsed_s", "phase"} <= set(progress[0][1])
    assert "running" in [data["status"] for _, kind, data in events if kind == "status"] or progress

    # Resuming after the last progress event: nothing is sent again, the stream still ends.
    resumed = _events(service, job_id, **{"Last-Event-ID": progress[-1][0]})
    assert [kind for _, kind, _ in resumed] == ["status", "end"]


def test_event_stream_of_a_canceled_queued_job_ends(service) -> None:
    from tests.conftest import make_client

    with make_client(service.app.state.context.settings.redis_url, "odeserve-no-worker") as idle:
        job_id = idle.post("/solve", json=SMALL).json()["id"]
        assert idle.delete(f"/jobs/{job_id}").status_code == 202
        events = _events(idle, job_id)
        assert [kind for _, kind, _ in events] == ["status", "end"] and events[-1][2]["status"] == "canceled"


@pytest.mark.parametrize(
    ("fmt", "media", "magic"), [("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<?xml")]
)
def test_plot_of_a_finished_job(service, fmt: str, media: str, magic: bytes) -> None:
    job = submit(service, SMALL | {"exact": {"y": "exp(-x)"}})
    r = service.get(f"/jobs/{job['id']}/plot.{fmt}")
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    assert r.content.startswith(magic) and len(r.content) > 10_000
    if fmt == "svg":
        text = r.text
        for title in ("solution", "derivatives", "|residual|", "loss", "y (exact)"):
            assert title in text, title


def test_wrong_content_type_says_so(service) -> None:
    body = json.dumps(SMALL)
    r = service.post("/solve", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "Content-Type" and "application/json" in r.json()["detail"]
    r = service.post("/solve", content=b"{oops")
    assert r.status_code == 415 and "none was sent" in r.json()["detail"]


def test_hints_for_the_variable_and_ln(service) -> None:
    r = service.post("/solve", json={"equations": ["y' = -t*y"], "domain": [0, 1], "conditions": ["y(0) = 1"]})
    assert r.status_code == 422 and 'set "variable": "t"' in r.json()["detail"]
    r = service.post("/solve", json={"equations": ["y' = ln(x + 2)"], "domain": [0, 1], "conditions": ["y(0) = 1"]})
    assert r.status_code == 422 and "did you mean 'log'" in r.json()["detail"]


def test_the_plot_needs_no_torch() -> None:
    import subprocess
    import sys

    from tests.problems import ROOT

    code = """
import sys
from odeserve.plot import figure
from odeserve.problem import load_problem
from odeserve.report import HistoryPoint, Samples
p = load_problem({"equations": ["y' = -y"], "domain": [0, 1], "conditions": ["y(0) = 1"], "exact": {"y": "exp(-x)"}})
s = Samples(variable="x", x=[0.0, 0.5, 1.0], values={"y": [1.0, 0.6, 0.37]}, derivatives={"y'": [-1.0, -0.6, -0.37]},
            residuals={"equations[0]": [1e-9, float("nan"), 2e-9]})
png = figure(p, s, [HistoryPoint(iteration=1, loss=1.0, elapsed_s=0.1)], "converged", "png")
assert png[:4] == b"\\x89PNG" and s.residuals["equations[0]"][1] is None
assert "torch" not in sys.modules, "the plot loaded torch"
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
