"""The HTTP producer API: contract tests with schemathesis against its own OpenAPI document, and the
behaviours a caller relies on (auth, 422 messages, idempotency, batch, status, DLQ)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from producers.api import create_app
from schemas import KINDS
from tests.conftest import queue_depth

KEY = "test-api-key"
app = create_app(api_keys=[KEY])
schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(redis_url):
    return app.test_client()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_honours_its_openapi_document(case, redis_url) -> None:
    checks = [status_code_conformance, response_schema_conformance]
    if case.operation.path != "/healthz":  # its documented 503 means "no worker replied": none runs here
        checks.append(not_a_server_error)
    case.call_and_validate(headers=AUTH, checks=checks)


def test_openapi_comes_from_the_message_schemas(client) -> None:
    spec = client.get("/openapi.json").get_json()
    text = spec["components"]["schemas"]["TextMessage"]
    assert text["required"] == ["kind", "recipient", "text"]
    assert text["properties"]["kind"]["enum"] == ["text"]
    body = spec["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Message"}
    message = spec["components"]["schemas"]["Message"]
    assert len(message["oneOf"]) == len(KINDS) == 20
    assert message["discriminator"]["mapping"]["text"] == "#/components/schemas/TextMessage"


def test_keys_are_required(client) -> None:
    assert client.post("/v1/messages", json={}).status_code == 401
    assert client.post("/v1/messages", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    with pytest.raises(RuntimeError, match="IGSEND_API_KEYS"):
        create_app(api_keys=[])


def test_a_refused_message_names_the_field_and_queues_nothing(client, r) -> None:
    before = queue_depth(r)
    response = client.post("/v1/messages", json={"kind": "text", "recipient": "x", "text": "é" * 501}, headers=AUTH)
    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == {"text": ["must be at most 1000 UTF-8 bytes (got 1002)"]}
    assert queue_depth(r) == before


def test_queue_poll_and_idempotency(client, private_db) -> None:  # db 1: no worker takes the message away
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = client.post("/v1/messages", json={"kind": "sticker", "recipient": "abc"}, headers=headers)
    assert first.status_code == 202
    job_id = first.get_json()["id"]
    assert first.headers["Location"] == f"/v1/messages/{job_id}"
    again = client.post("/v1/messages", json={"kind": "sticker", "recipient": "abc"}, headers=headers)
    assert again.get_json()["id"] == job_id
    status = client.get(f"/v1/messages/{job_id}", headers=AUTH).get_json()
    assert status["status"] == "queued" and status["kind"] == "sticker"
    assert client.get("/v1/messages/nope", headers=AUTH).status_code == 404


def test_batch_queues_the_valid_and_reports_the_rest(client) -> None:
    documents = [{"kind": "text", "recipient": "a", "text": "ok"}, {"kind": "text", "recipient": "a"},
                 {"kind": "link", "recipient": "a", "url": "https://example.com"}]
    body = client.post("/v1/messages:batch", json={"messages": documents}, headers=AUTH).get_json()
    assert (body["queued"], body["duplicates"], body["invalid"], body["conflicts"]) == (2, 0, 1, 0)
    assert body["results"][1] == {"index": 1, "status": "invalid", "errors": {"text": ["is required"]}}
    assert body["results"][0]["status"] == body["results"][2]["status"] == "queued"
    assert "id" in body["results"][0] and "id" in body["results"][2]
    too_many = client.post("/v1/messages:batch", json={"messages": [documents[0]] * 1001}, headers=AUTH)
    assert too_many.status_code == 422


def test_a_reused_key_with_another_message_is_409(client, private_db) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-43"}
    first = client.post("/v1/messages", json={"kind": "text", "recipient": "abc", "text": "10"}, headers=headers)
    job_id = first.get_json()["id"]
    other = client.post("/v1/messages", json={"kind": "text", "recipient": "abc", "text": "1000"}, headers=headers)
    assert other.status_code == 409
    assert other.get_json() == {"code": 409, "status": "Conflict", "message": (
        f"idempotency key 'order-43' was already used for a different message (job {job_id})")}
    assert queue_depth(private_db) == 1


def test_batch_counts_are_exact_when_a_key_repeats(client, private_db) -> None:
    doc = {"kind": "text", "recipient": "abc", "text": "once", "idempotency_key": "batch-9"}
    body = client.post("/v1/messages:batch", json={"messages": [doc, doc, doc]}, headers=AUTH).get_json()
    assert (body["queued"], body["duplicates"], body["invalid"], body["conflicts"]) == (1, 2, 0, 0)
    job_id = body["results"][0]["id"]
    assert [item["status"] for item in body["results"]] == ["queued", "duplicate", "duplicate"]
    assert {item["id"] for item in body["results"]} == {job_id}
    assert queue_depth(private_db) == 1
    mixed = [doc, {**doc, "text": "twice"}, {"kind": "text", "recipient": "abc", "text": "new"}]
    body = client.post("/v1/messages:batch", json={"messages": mixed}, headers=AUTH).get_json()
    assert (body["queued"], body["duplicates"], body["invalid"], body["conflicts"]) == (1, 1, 0, 1)
    assert body["results"][1] == {"index": 1, "status": "conflict", "id": job_id, "errors": {"idempotency_key": [
        f"idempotency key 'batch-9' was already used for a different message (job {job_id})"]}}
    assert queue_depth(private_db) == 2


def test_healthz_names_the_redis_settings_that_risk_messages(client, r) -> None:
    assert client.get("/healthz").get_json()["warnings"] == []  # the suite's Redis: noeviction, AOF on
    before = r.config_get("maxmemory-policy")["maxmemory-policy"]
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        warnings = client.get("/healthz").get_json()["warnings"]
    finally:
        r.config_set("maxmemory-policy", before)
    assert len(warnings) == 1 and "allkeys-lru" in warnings[0]
