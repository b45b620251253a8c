"""The HTTP API against hostile or broken input, and with Redis gone: every answer is a deliberate status in
the one JSON error shape, never a 500 or a hang. The real app, a real Redis (a database no worker consumes)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from igsend.core.records import Outcomes
from igsend.core.store import job_key
from producers.api import MAX_BODY_BYTES, MAX_URL_CHARS, create_app
from tests.conftest import queue_depth, reset_client_caches
from tests.listeners import CountingListener

KEY = "hostile-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGE = {"kind": "text", "recipient": "abc", "text": "hi"}


@pytest.fixture
def client(private_db):
    return create_app(api_keys=[KEY]).test_client()


def assert_error_shape(response, code: int) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code and isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"code", "status", "message", "errors"}
    return body


# --- authentication ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    None, "Bearer wrong", f"Basic {KEY}", "Bearer", "", f"Bearer{KEY}",
    "Bearer é".encode().decode("latin-1"),  # UTF-8 bytes as a WSGI server hands them over
    "Bearer \u2603\u0000",  # text no WSGI server would produce: still just a wrong key
])
def test_every_401_is_json_with_a_bearer_challenge(client, header) -> None:
    headers = {} if header is None else {"Authorization": header}
    for response in (client.post("/v1/messages", json=MESSAGE, headers=headers),
                     client.get("/v1/dead-letters", headers=headers)):
        assert_error_shape(response, 401)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="igsend"'


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(client, scheme) -> None:
    response = client.get("/v1/dead-letters", headers={"Authorization": f"{scheme} {KEY}"})
    assert response.status_code == 200, response.get_json()


# --- bodies --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages:batch"])
def test_deeply_nested_json_is_400(client, private_db, path) -> None:
    for body in ("[" * 100_000, '{"messages": ' + "[" * 100_000, "[" * 50_000 + "]" * 50_000):
        response = client.post(path, data=body, content_type="application/json", headers=AUTH)
        assert "nested too deeply" in assert_error_shape(response, 400)["message"]
    assert queue_depth(private_db) == 0


@pytest.mark.parametrize("body", [b"{", b'{"kind": "text",}', b"\xff\xfe{}", b"1" * 5000])
def test_malformed_json_is_400(client, body) -> None:
    response = client.post("/v1/messages", data=body, content_type="application/json", headers=AUTH)
    assert assert_error_shape(response, 400)["message"].startswith("the body is not valid JSON")


def test_a_body_over_the_limit_is_413_and_nothing_is_queued(client, private_db) -> None:
    padding = "x" * (MAX_BODY_BYTES + 1 - len('{"messages": [], "p": ""}'))
    body = json.dumps({"messages": [], "p": padding})
    assert len(body) == MAX_BODY_BYTES + 1
    for path in ("/v1/messages", "/v1/messages:batch"):
        response = client.post(path, data=body, content_type="application/json", headers=AUTH)
        assert str(MAX_BODY_BYTES) in assert_error_shape(response, 413)["message"]
    assert queue_depth(private_db) == 0


def test_the_largest_valid_batch_fits_under_the_limit(client, private_db) -> None:
    # 1,000 texts at the 1,000-byte limit, every character \u-escaped (json.dumps's default for non-ASCII),
    # with the longest ids and 200-character idempotency keys made of characters JSON must escape.
    messages = [{"kind": "text", "recipient": "r" * 64, "account": "a" * 64, "text": "\U0001f600" * 250,
                 "idempotency_key": f"{n:04d}" + '"' * 196} for n in range(1000)]
    body = json.dumps({"messages": messages})
    assert 3_500_000 < len(body) <= MAX_BODY_BYTES
    response = client.post("/v1/messages:batch", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["queued"] == 1000
    assert queue_depth(private_db) == 1000


# --- ids and URLs --------------------------------------------------------------------------------------------

ODD_IDS = ["x" * 300, "%C3%A9t%C3%A9", "%00", "a%00b", "a/b", "a%2Fb", "..", "%ED%A0%80", "%20", "%FF"]


@pytest.mark.parametrize("job_id", ODD_IDS)
def test_odd_job_ids_are_404(client, job_id) -> None:
    assert_error_shape(client.get(f"/v1/messages/{job_id}", headers=AUTH), 404)
    assert_error_shape(client.post(f"/v1/dead-letters/{job_id}/replay", headers=AUTH), 404)


def test_errors_have_one_json_shape_everywhere(client) -> None:
    assert_error_shape(client.get("/nowhere", headers=AUTH), 404)
    assert_error_shape(client.get("/v1/messages", headers=AUTH), 405)
    assert_error_shape(client.delete("/v1/dead-letters", headers=AUTH), 405)
    assert_error_shape(client.get("/v1/messages/" + "x" * MAX_URL_CHARS, headers=AUTH), 414)
    assert_error_shape(client.get("/v1/dead-letters?account=" + "a" * MAX_URL_CHARS, headers=AUTH), 414)
    body = assert_error_shape(client.get("/v1/dead-letters?limit=many", headers=AUTH), 422)
    assert "limit" in body["errors"]["query"]
    body = assert_error_shape(client.post("/v1/messages", json={"kind": "text"}, headers=AUTH), 422)
    assert body["errors"]["json"]["recipient"] == ["is required"]


def test_an_unexpected_error_is_a_json_500_without_details(private_db) -> None:
    app = create_app(api_keys=[KEY])

    def broken():
        raise ValueError("internal detail that must not leak")

    app.add_url_rule("/v1/broken", "broken", broken)
    body = assert_error_shape(app.test_client().get("/v1/broken", headers=AUTH), 500)
    assert "internal detail" not in json.dumps(body)


# --- the dead-letter queue -----------------------------------------------------------------------------------

def test_replaying_a_job_that_is_not_dead_is_409(client, private_db) -> None:
    from igsend.core import dlq

    job_id = "delivered-job-1"
    private_db.hset(job_key(job_id), mapping={"id": job_id, "status": "queued", "account": "default",
                                              "recipient": "abc", "kind": "text", "message": json.dumps(MESSAGE)})
    Outcomes(private_db, record_ttl=3600).dead(job_id, "test", None, None)  # dead-lettered ...
    private_db.hset(job_key(job_id), mapping={"status": "delivered", "result": json.dumps(  # ... yet delivered
        {"recipient_id": "abc", "message_id": "mid"})})
    body = assert_error_shape(client.post(f"/v1/dead-letters/{job_id}/replay", headers=AUTH), 409)
    assert "is delivered, not dead" in body["message"]
    assert queue_depth(private_db) == 0 and dlq.show(job_id, client=private_db) is not None
    assert_error_shape(client.post("/v1/dead-letters/no-such-job/replay", headers=AUTH), 404)


# --- Redis down ----------------------------------------------------------------------------------------------

#: The API's quick client makes one attempt and no retry.
QUICK_ATTEMPTS = 1


@pytest.fixture
def redis_down(redis_url) -> Iterator[CountingListener]:
    """IGSEND_REDIS_URL pointing at a peer that drops every connection, for this test only."""
    with CountingListener(close_at_once=True) as peer:
        os.environ["IGSEND_REDIS_URL"] = peer.url
        reset_client_caches()
        yield peer
    os.environ["IGSEND_REDIS_URL"] = redis_url
    reset_client_caches()


def test_with_redis_down_every_call_is_a_quick_503(redis_down: CountingListener) -> None:
    """Quick, counted rather than timed: one connection attempt per call, none of the shared client's retries
    (which would hold the caller ~10 s and make dozens of connections)."""
    client = create_app(api_keys=[KEY]).test_client()
    calls = [("post", "/v1/messages", {"json": MESSAGE}), ("post", "/v1/messages:batch", {"json": {"messages": [
        MESSAGE]}}), ("get", "/v1/messages/some-job", {}), ("get", "/v1/dead-letters", {}),
        ("post", "/v1/dead-letters/some-job/replay", {})]
    for method, path, kwargs in calls:
        before = redis_down.connections
        response = getattr(client, method)(path, headers=AUTH, **kwargs)
        assert "Redis" in assert_error_shape(response, 503)["message"]
        assert redis_down.connections - before <= QUICK_ATTEMPTS, (path, redis_down.connections - before)
    before = redis_down.connections
    health = client.get("/healthz")
    assert redis_down.connections - before <= QUICK_ATTEMPTS
    assert health.status_code == 503
    assert health.get_json() == {"ok": False, "redis": False, "workers": 0, "error": "ConnectionError"}
    assert client.get("/openapi.json").status_code == 200


def test_redis_failing_after_the_check_is_still_503(tmp_path, redis_url) -> None:
    """A Redis that answers PING and reads but refuses writes (a replica of a master that is gone): the guard
    lets the call through, the write fails inside it, and the caller still gets a 503, not a 500."""
    import redis as redis_lib

    from igsend.local.embedded_redis import free_port, start_redis

    server = start_redis(tmp_path)
    os.environ["IGSEND_REDIS_URL"] = server.url
    reset_client_caches()
    try:
        direct = redis_lib.Redis.from_url(server.url, decode_responses=True)
        direct.hset(job_key("dead-job"), mapping={"id": "dead-job", "status": "queued", "account": "default",
                                                  "recipient": "abc", "kind": "text", "message": json.dumps(MESSAGE)})
        Outcomes(direct, record_ttl=3600).dead("dead-job", "test", None, None)
        direct.replicaof("127.0.0.1", free_port())
        client = create_app(api_keys=[KEY]).test_client()
        assert client.get("/v1/messages/dead-job", headers=AUTH).get_json()["status"] == "dead"
        assert_error_shape(client.post("/v1/dead-letters/dead-job/replay", headers=AUTH), 503)
        assert_error_shape(client.post("/v1/messages", json=MESSAGE, headers=AUTH), 503)
        direct.replicaof("NO", "ONE")
    finally:
        os.environ["IGSEND_REDIS_URL"] = redis_url
        reset_client_caches()
        server.stop()
