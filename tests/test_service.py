"""End to end through the real stack: HTTP -> Redis/RQ -> worker process -> artifacts."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

from tests.conftest import make_client, wait_for
from tests.problems import NONLINEAR, ROUNDING, public_problems, with_options

PROBLEMS = public_problems()


def finish(client, job_id: str, timeout: float = 180) -> dict:
    def done():
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_for(done, timeout, 0.3)


@pytest.mark.parametrize("name", ["seed_gauss", "seed_poly"])
def test_seed_problems_end_to_end(service, name: str) -> None:
    import torch

    spec = PROBLEMS[name] | {"output": {"points": 41, "derivatives": 2}}
    r = service.post("/solve", json=spec)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and len(job["id"]) >= 22
    job = finish(service, job["id"])
    assert job["status"] == "succeeded", job
    assert job["metrics"]["error"]["y"]["rel_l2"] <= 1e-6
    assert job["progress"]["iteration"] == job["metrics"]["iterations"]
    estimate = job["metrics"]["estimate"]
    assert estimate["method"] == "classical" and estimate["rel_l2"] <= 1e-5
    assert job["metrics"]["accuracy"] == {"tolerance": 1e-4, "estimated_rel_l2": estimate["rel_l2"], "met": True}
    assert [a["kept"] for a in job["metrics"]["attempts"]] == [True]
    assert job["started_at"] and job["finished_at"] and job["outcome"] in ("converged", "budget_reached")

    sol = service.get(f"/jobs/{job['id']}/solution").json()
    x = np.array(sol["x"])
    exact = np.exp(-(x**2)) if name == "seed_gauss" else -(x**2) + x / 2 + 4
    y = np.array(sol["values"]["y"])
    assert np.linalg.norm(y - exact) / np.linalg.norm(exact) <= 1e-6
    assert set(sol["derivatives"]) == {"y'", "y''"} and set(sol["residuals"]) == {"equations[0]"}
    assert sol["accuracy"] == job["metrics"]["accuracy"]

    csv = service.get(f"/jobs/{job['id']}/solution", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.strip().splitlines()
    assert rows[0] == "x,y,y',y'',equations[0]" and len(rows) == 42
    assert float(rows[1].split(",")[1]) == pytest.approx(y[0], abs=1e-15)

    xt = torch.tensor(sol["x"], dtype=torch.float64).reshape(-1, 1)
    ts = service.get(f"/jobs/{job['id']}/model")
    assert ts.status_code == 200 and ts.headers["content-type"] == "application/octet-stream"
    assert f"{job['id']}.pt" in ts.headers["content-disposition"]
    scripted = torch.jit.load(io.BytesIO(ts.content))
    assert np.max(np.abs(scripted(xt).numpy()[:, 0] - y)) <= ROUNDING
    assert np.max(np.abs(scripted.derivative(xt, 2).numpy()[:, 0] - np.array(sol["derivatives"]["y''"]))) <= ROUNDING
    pt2 = service.get(f"/jobs/{job['id']}/model", params={"format": "export"})
    program = torch.export.load(io.BytesIO(pt2.content))
    assert np.max(np.abs(program.module()(xt).numpy()[:, 0] - y)) <= ROUNDING


def test_errors_are_problem_json(service) -> None:
    bad = {"equations": ["y'' = sinn(x)"], "domain": [0, 1], "conditions": ["y(0) = 0", "y'(0) = 1"]}
    r = service.post("/solve", json=bad)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["detail"] == "equations[0]: unknown function 'sinn' at column 7 (did you mean 'sin'?)"
    assert body["field"] == "equations[0]" and body["status"] == 422

    r = service.post("/solve", json={"equations": ["y' = y"], "domain": [0, "inf"], "conditions": ["y(0)=1"]})
    assert r.status_code == 422 and r.json()["field"] == "domain[1]"
    r = service.post("/solve", json={"equations": "y' = y", "domain": [0, 1]})
    assert r.status_code == 422 and r.json()["field"] == "equations"
    r = service.post("/solve", json={"equations": ["y' = y"], "domain": [0, 1], "conditions": ["y(0)=1"], "x": 1})
    assert r.status_code == 422 and r.json()["detail"] == "x: unknown field"
    r = service.post("/solve", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = service.post("/solve", json=with_options(PROBLEMS["seed_gauss"], max_iterations=10**6))
    assert r.status_code == 422 and r.json()["field"] == "options.max_iterations"

    r = service.get("/jobs/does-not-exist")
    assert r.status_code == 404 and "does-not-exist" in r.json()["detail"]
    for odd in ("a:b", "%00", "a%20b", "x" * 100, "rq:job:x", "..%2f.."):
        for suffix in ("", "/solution", "/model"):
            r = service.get(f"/jobs/{odd}{suffix}")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", (odd, suffix)
    assert service.get("/jobs/nope/solution").status_code == 404
    assert service.get("/jobs/nope/model").status_code == 404
    assert service.delete("/jobs/nope").status_code == 404

    big = {"equations": ["y' = y"], "domain": [0, 1], "conditions": ["y(0) = 1"], "pad": "x" * 2_000_000}
    r = service.post("/solve", content=json.dumps(big), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    r = service.post("/solve", content=b"\n\xff\xfea\xf1z", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = service.delete("/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = service.put("/jobs/abc")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    for body in ("[]", '"x"', "null"):
        r = service.post("/solve", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "body"
    assert service.put("/solve").status_code == 405
    r = service.get("/jobs/x/model", params={"format": "onnx"})
    assert r.status_code == 422 and r.json()["field"] == "format"


def test_cancel_queued_and_running(redis_server, start_worker) -> None:
    queue = "odeserve-cancel"
    start_worker(queue)
    long = with_options(NONLINEAR, max_iterations=10**5, time_limit_s=120)
    with make_client(redis_server.url, queue) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        running = client.post("/solve", json=long).json()
        queued = client.post("/solve", json=long).json()
        wait_for(lambda: client.get(f"/jobs/{running['id']}").json()["progress"]["iteration"] > 50, 60)

        # 409 for results of an unfinished job
        r = client.get(f"/jobs/{running['id']}/solution")
        assert r.status_code == 409 and "running" in r.json()["detail"]
        assert client.get(f"/jobs/{queued['id']}/model").status_code == 409

        r = client.delete(f"/jobs/{queued['id']}")
        assert r.status_code == 202 and r.json()["status"] == "canceled"

        assert client.delete(f"/jobs/{running['id']}").status_code == 202
        job = finish(client, running["id"], 10)
        assert job["status"] == "canceled" and job["outcome"] == "canceled"
        assert "best model" in job["message"]
        assert client.get(f"/jobs/{running['id']}/model").status_code == 200
        assert client.get(f"/jobs/{running['id']}/solution").status_code == 200
        assert client.delete(f"/jobs/{running['id']}").status_code == 409
        assert client.get(f"/jobs/{queued['id']}").json()["status"] == "canceled"


def _rq_meta(redis_url: str, job_id: str) -> dict:
    from redis import Redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    return Job.fetch(job_id, connection=Redis.from_url(redis_url), serializer=JSONSerializer).meta


#: Still training when the tests act on it: a nonlinear problem (plain steps, the whole budget).
LONG = with_options(NONLINEAR, max_iterations=1500, time_limit_s=300)


def test_worker_killed_mid_job_is_resumed_elsewhere(redis_server, start_worker) -> None:
    queue = "odeserve-kill"
    worker = start_worker(queue, ODESERVE_CHECKPOINT_S="0.5")
    with make_client(redis_server.url, queue) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        job = client.post("/solve", json=LONG).json()
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["progress"]["iteration"] > 300, 90)
        worker.kill9()
        # Heartbeat 2 s + grace 3 s, then the API's registry cleanup requeues it (retry).
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["status"] == "queued", 30)
        start_worker(queue, ODESERVE_CHECKPOINT_S="0.5")
        done = finish(client, job["id"], 180)
        assert done["status"] == "succeeded", done
        assert _rq_meta(redis_server.url, job["id"])["resumed_from"] > 300
        assert done["metrics"]["error"]["y"]["rel_l2"] <= 1e-6
        assert done["progress"]["iteration"] == 1500


def test_worker_killed_without_retries_fails_with_a_reason(redis_server, start_worker) -> None:
    queue = "odeserve-kill-noretry"
    worker = start_worker(queue)
    with make_client(redis_server.url, queue, max_retries=0) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        job = client.post("/solve", json=LONG).json()
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["status"] == "running", 60)
        worker.kill9()
        done = finish(client, job["id"], 30)
        assert done["status"] == "failed"
        assert done["error"]["type"] == "worker_died" and "died" in done["error"]["detail"]
        # Readiness stops counting the dead worker once it has been silent for
        # max(heartbeat, idle beat) + grace = 8 s here.
        wait_for(lambda: client.get("/readyz").status_code == 503, 20)


def test_sigterm_hands_the_job_back(redis_server, start_worker) -> None:
    queue = "odeserve-term"
    worker = start_worker(queue, ODESERVE_CHECKPOINT_S="0.5")
    with make_client(redis_server.url, queue) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60)
        job = client.post("/solve", json=LONG).json()
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["progress"]["iteration"] > 200, 90)
        worker.proc.send_signal(15)
        assert worker.proc.wait(30) == 0  # it does not train to the end
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"
        start_worker(queue)
        done = finish(client, job["id"], 180)
        assert done["status"] == "succeeded" and done["progress"]["iteration"] == 1500
        assert _rq_meta(redis_server.url, job["id"])["resumed_from"] > 200


def test_redis_down_gives_503_and_recovers(tmp_path) -> None:
    from common.redis_server import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path).start()
    spec = with_options(PROBLEMS["lagaris2"], max_iterations=10)
    try:
        with make_client(server.url, "odeserve-outage") as client:
            first = client.post("/solve", json=spec)
            assert first.status_code == 202
            server.stop(kill=True)
            r = client.post("/solve", json=spec)
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
            assert "Redis" in r.json()["detail"] and r.headers["retry-after"]
            assert client.get(f"/jobs/{first.json()['id']}").status_code == 503
            assert client.get("/healthz").status_code == 200
            server.start()
            assert client.post("/solve", json=spec).status_code == 202
            # AOF: the job accepted before the crash is still there.
            assert client.get(f"/jobs/{first.json()['id']}").json()["status"] == "queued"
    finally:
        server.stop()


def test_ready_without_workers_is_503(redis_server) -> None:
    with make_client(redis_server.url, "odeserve-no-workers") as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "no worker is running"
        assert client.get("/healthz").json() == {"status": "ok"}


def test_idempotency_key(service) -> None:
    spec = with_options(PROBLEMS["lagaris2"], max_iterations=20)
    key = {"Idempotency-Key": "client-42/attempt"}
    first = service.post("/solve", json=spec, headers=key)
    again = service.post("/solve", json=spec, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert service.post("/solve", json=spec).json()["id"] != first.json()["id"]
    other = service.post("/solve", json=with_options(spec, seed=1), headers=key)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    bad = service.post("/solve", json=spec, headers={"Idempotency-Key": "x" * 201})
    assert bad.status_code == 422


def test_worker_reconnects_after_a_redis_restart(tmp_path, start_worker) -> None:
    from common.redis_server import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path).start()
    try:
        worker = start_worker("odeserve-restart", ODESERVE_REDIS_URL=server.url)
        with make_client(server.url, "odeserve-restart") as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60)
            server.stop(kill=True)  # kill -9: AOF (everysec) keeps what was written
            time.sleep(2)
            server.start()
            job = wait_for(lambda: _submit(client, with_options(PROBLEMS["lagaris2"], max_iterations=50)), 30)
            try:
                done = finish(client, job["id"], 120)
            except AssertionError:
                status = client.get(f"/jobs/{job['id']}").json()["status"]
                raise AssertionError(f"job {status}, worker alive {worker.alive()}:\n{worker.log_tail()}") from None
            assert done["status"] == "succeeded"
            assert worker.alive()
            # Through the outage and a job, the parent kept one thread: every fork is safe (no
            # lock of another thread's can be inherited held by a work horse).
            assert worker.threads() == 1
    finally:
        server.stop()


def test_a_worker_started_before_its_redis_waits_for_it(tmp_path, start_worker) -> None:
    """Redis down when the worker connects (at start, as here, or still restarting when it
    reconnects): it waits and tries again rather than exit."""
    from common.redis_server import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path)
    try:
        worker = start_worker("odeserve-late-redis", ODESERVE_REDIS_URL=server.url)
        wait_for(lambda: worker.log.exists() and "reconnecting in" in worker.log.read_text(errors="replace"), 60)
        assert worker.alive(), worker.log_tail()
        server.start()
        with make_client(server.url, "odeserve-late-redis") as client:
            job = wait_for(lambda: _submit(client, with_options(PROBLEMS["lagaris2"], max_iterations=50)), 30)
            assert finish(client, job["id"], 120)["status"] == "succeeded", worker.log_tail()
        assert worker.alive()
    finally:
        server.stop()


#: A worker whose first registry maintenance fails as a Redis lost mid-maintenance does; RQ's loop
#: then quits (it does not raise) and, Redis being back, unregisters cleanly.
_FAULTY_WORKER = """
from redis.exceptions import ConnectionError
import worker.main as main
failed = []
def clean_registries(self):
    if not failed:
        failed.append(1)
        raise ConnectionError("injected: Redis lost during maintenance")
    main.OdeWorker.clean_registries(self)
main.worker_class = lambda settings: type("Faulty", (main.OdeWorker,), {"clean_registries": clean_registries})
raise SystemExit(main.run_worker())
"""


def test_worker_reconnects_when_rq_quits_its_loop_on_an_error(redis_server, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = os.environ | {
        "ODESERVE_REDIS_URL": redis_server.url,
        "ODESERVE_QUEUE": "odeserve-quit",
        "PYTHONPATH": str(ROOT),
    }
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FAULTY_WORKER], env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        with make_client(redis_server.url, "odeserve-quit") as client:
            job = client.post("/solve", json=with_options(PROBLEMS["lagaris2"], max_iterations=20)).json()
            done = finish(client, job["id"], 120)
        assert done["status"] == "succeeded", done
        text = log.read_text()
        assert "found an unhandled exception, quitting" in text and "reconnecting in" in text, text
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _submit(client, spec):
    r = client.post("/solve", json=spec)
    return r.json() if r.status_code == 202 else None


def test_api_keys_ownership_and_quotas(redis_server) -> None:
    queue = "odeserve-keys"  # no worker: jobs stay queued, which is what the quota counts
    spec = with_options(PROBLEMS["lagaris2"], max_iterations=20)
    with make_client(
        redis_server.url, queue, api_keys="alpha-key,beta-key", max_active_jobs_per_key=2, rate_limit_per_minute=5
    ) as client:
        assert client.get("/healthz").status_code == 200
        r = client.post("/solve", json=spec)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/solve", json=spec, headers={"X-API-Key": "wrong"}).status_code == 401
        alpha = {"Authorization": "Bearer alpha-key"}
        beta = {"X-API-Key": "beta-key"}
        job = client.post("/solve", json=spec, headers=alpha)
        assert job.status_code == 202
        jid = job.json()["id"]
        assert client.get(f"/jobs/{jid}", headers=alpha).status_code == 200
        # Another key sees exactly what it would see for a job that does not exist.
        other = client.get(f"/jobs/{jid}", headers=beta)
        missing = client.get("/jobs/no-such-job", headers=beta)
        assert other.status_code == missing.status_code == 404
        assert other.json()["title"] == missing.json()["title"]
        for suffix in ("/solution", "/model"):
            assert client.get(f"/jobs/{jid}{suffix}", headers=beta).status_code == 404
        assert client.delete(f"/jobs/{jid}", headers=beta).status_code == 404
        assert client.get(f"/jobs/{jid}").status_code == 401
        # Idempotency keys are per API key: beta's same key makes its own job.
        ka = client.post("/solve", json=spec, headers=alpha | {"Idempotency-Key": "k1"}).json()["id"]
        kb = client.post("/solve", json=spec, headers=beta | {"Idempotency-Key": "k1"}).json()["id"]
        assert ka != kb
        # alpha now has 2 queued jobs: the third is refused with Retry-After, and a refused
        # idempotent submit leaves its key free for the retry.
        r = client.post("/solve", json=spec, headers=alpha)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "limit is 2" in r.json()["detail"]
        retry_key = alpha | {"Idempotency-Key": "after-429"}
        assert client.post("/solve", json=spec, headers=retry_key).status_code == 429
        # Canceling one frees a slot; the idempotent retry now gets a real job.
        assert client.delete(f"/jobs/{jid}", headers=alpha).status_code == 202
        retried = client.post("/solve", json=spec, headers=retry_key)
        assert retried.status_code == 202
        assert client.get(f"/jobs/{retried.json()['id']}", headers=alpha).status_code == 200
        # Rate: 5 submissions per minute per key (beta has used 1).
        codes = [client.post("/solve", json=spec, headers=beta).status_code for _ in range(5)]
        assert 429 in codes


def test_request_id_follows_the_job_into_the_worker(service, start_worker) -> None:
    r = service.post(
        "/solve", json=with_options(PROBLEMS["lagaris2"], max_iterations=20), headers={"X-Request-ID": "trace-abc-123"}
    )
    assert r.headers["x-request-id"] == "trace-abc-123"
    job = finish(service, r.json()["id"], 120)
    assert job["status"] == "succeeded"
    generated = service.get("/healthz").headers["x-request-id"]
    assert len(generated) == 16 and generated != "trace-abc-123"
    assert service.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers["x-request-id"] != "bad id!"

    def logged() -> list[dict]:
        lines = []
        for path in service.worker_logs:
            for line in path.read_text().splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if record.get("request_id") == "trace-abc-123":
                        lines.append(record)
        return lines

    records = wait_for(lambda: [x for x in logged() if x["message"] == "job finished"] and logged(), 10)
    assert {x["message"] for x in records} >= {"job started", "job finished"}
    assert all(x["job_id"] == job["id"] for x in records)


def test_metrics(service) -> None:
    job = service.post("/solve", json=with_options(PROBLEMS["lagaris2"], max_iterations=20)).json()
    assert finish(service, job["id"], 120)["status"] == "succeeded"
    service.get("/jobs/nope")
    body = service.get("/metrics")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    text = body.text
    assert 'odeserve_http_requests_total{method="GET",route="/jobs/{job_id}",status="404"}' in text
    for name in (
        "odeserve_queue_depth",
        "odeserve_jobs_running",
        "odeserve_workers 2.0",
        "odeserve_job_duration_seconds_count",
        "odeserve_http_request_seconds_bucket",
    ):
        assert name in text, name
    assert 'odeserve_job_outcomes_total{outcome="budget_reached"}' in text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"options": {"max_iterations": 10**6}}, "options.max_iterations"),
        ({"options": {"time_limit_s": 10**4}}, "options.time_limit_s"),
        ({"output": {"points": 50_000}}, "output.points"),
        ({"options": {"points": 10_000}}, "options.points"),
        ({"options": {"network": {"width": 512, "depth": 8}}}, "options.network"),
        ({"equations": ["y' = y"] * 17}, "equations"),
        ({"conditions": ["y(0) = 1"] * 65}, "conditions"),
        ({"parameters": {f"p{i}": 1.0 for i in range(65)}}, "parameters"),
        ({"equations": ["y' = " + "+".join(["y"] * 1200)]}, "equations[0]"),
        ({"equations": ["y' = " + "(" * 100 + "y" + ")" * 100]}, "equations[0]"),
        ({"exact": {"y": "x" * 3000}}, "exact.y"),
    ],
)
def test_limits_are_422_naming_the_field(redis_server, change: dict, field: str) -> None:
    base = {"equations": ["y' = y"], "domain": [0, 1], "conditions": ["y(0) = 1"]}
    with make_client(redis_server.url, "odeserve-limits") as client:
        r = client.post("/solve", json=base | change)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and r.json()["detail"].startswith(field)
