"""Issue 10 §6 over real HTTP (a uvicorn API process and a real Redis): metrics labels for
made-up methods, concurrent submits with one Idempotency-Key, chunked bodies over the limit, and
authentication before body validation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from odeserve.errors import ExpressionSyntaxError
from odeserve.expr.parser import tokenize
from tests.conftest import make_client
from tests.test_quota import DECAY, api_process


def test_made_up_methods_share_one_metrics_label(redis_server) -> None:
    with make_client(redis_server.url, "odeserve-http-metrics") as client:
        for i in range(40):
            client.request(f"FAKE{i}", "/healthz")
        text = client.get("/metrics").text
    assert 'method="other"' in text
    assert "FAKE" not in text


def test_concurrent_submits_with_one_idempotency_key_get_one_job(redis_server) -> None:
    with api_process(redis_server.url, "odeserve-http-idem") as base:

        def submit(_: int) -> httpx.Response:
            return httpx.post(f"{base}/solve", json=DECAY, headers={"Idempotency-Key": "same-key"}, timeout=30)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(submit, range(20)))
    assert {r.status_code for r in answers} <= {202, 409}, [r.text for r in answers if r.status_code not in (202, 409)]
    ids = {r.json()["id"] for r in answers if r.status_code == 202}
    assert len(ids) == 1
    for r in answers:
        if r.status_code == 409:
            assert r.headers["retry-after"] and r.json()["field"] == "Idempotency-Key"


def test_a_chunked_body_over_the_limit_is_413(redis_server) -> None:
    with api_process(redis_server.url, "odeserve-http-chunked", ODESERVE_MAX_BODY_BYTES="2000") as base:

        def chunks():
            yield b'{"equations": ["y\' = -y"], "domain": [0, 1], "conditions": ["y(0) = 1"], "pad": "'
            for _ in range(20):
                yield b"x" * 500
            yield b'"}'

        r = httpx.post(f"{base}/solve", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        ok = httpx.post(f"{base}/solve", json=DECAY)  # the server is fine afterwards
        assert ok.status_code == 202, ok.text


def test_with_keys_a_request_without_a_key_is_401_before_its_body_is_judged(redis_server) -> None:
    with api_process(redis_server.url, "odeserve-http-auth", ODESERVE_API_KEYS="the-key") as base:
        bad_json = httpx.post(f"{base}/solve", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 401 and bad_json.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(f"{base}/solve", json={"equations": 1}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        keyed = httpx.post(
            f"{base}/solve",
            content=b"{not json",
            headers={"Authorization": "Bearer the-key", "Content-Type": "application/json"},
        )
        assert keyed.status_code == 422  # with a valid key, the body is judged
        untyped = httpx.post(f"{base}/solve", content=b"{}", headers={"Authorization": "Bearer the-key"})
        assert untyped.status_code == 415  # ... and its Content-Type
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.put(f"{base}/healthz", content=b"{}").status_code == 405  # no route: the router answers


@pytest.mark.parametrize(
    "text",
    [
        "y + \uff11",  # full-width digit one
        "y + \u0661",  # Arabic-Indic digit one
        "y + 1\u06f0",  # extended Arabic-Indic zero
        "y\u2003+ 1",  # em space
        "y\u00a0+ 1",  # no-break space
        "y +\u30001",  # ideographic space
        "y + 1e\uff15",
    ],
)
def test_the_tokenizer_is_ascii_only(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        tokenize(text)
