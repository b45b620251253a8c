"""The HTTP producer API (flask-smorest): enqueue, poll, and work the DLQ from any language.

The OpenAPI document at ``/openapi.json`` is generated from the same marshmallow schemas the Python API
validates with; a refused message answers 422 with marshmallow's field messages. Keys come from
``IGSEND_API_KEYS`` (comma-separated) and are sent as ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import hmac
import os
from collections import Counter
from typing import Any

from flask import Flask, jsonify, request
from flask_smorest import Api, Blueprint, abort
from marshmallow import Schema, fields, validate

from producers import EnqueueError, IdempotencyConflict, InvalidMessage, JobNotFound, get_job, send, send_many
from schemas import KINDS, SCHEMAS

MAX_BATCH = 1000

blp = Blueprint("messages", __name__, url_prefix="/v1", description="Send messages and read their outcome")


def _document_schema(kind: str) -> type[Schema]:
    """The kind's schema with ``kind`` pinned to its value, so the OpenAPI oneOf is unambiguous."""
    pinned = fields.String(required=True, validate=validate.OneOf([kind]), metadata={"description": "message kind"})
    return type(f"{kind.capitalize()}Message", (SCHEMAS[kind],), {"kind": pinned})


DOCUMENT_SCHEMAS = {kind: _document_schema(kind) for kind in KINDS}


class JobIdSchema(Schema):
    id = fields.String(required=True)


class ResultSchema(Schema):
    recipient_id = fields.String(required=True)
    message_id = fields.String()


class ErrorDetailSchema(Schema):
    code = fields.Integer(allow_none=True)
    subcode = fields.Integer(allow_none=True)
    message = fields.String(allow_none=True)
    fbtrace_id = fields.String(allow_none=True)
    http_status = fields.Integer(allow_none=True)
    # "class" is a Python keyword; data_key keeps the JSON name
    error_class = fields.String(data_key="class", allow_none=True)


class StatusSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(
        ["queued", "sending", "retrying", "delivered", "dead", "unknown"]))
    attempts = fields.Integer(required=True)
    kind = fields.String(allow_none=True)
    account = fields.String(allow_none=True)
    recipient = fields.String(allow_none=True)
    result = fields.Nested(ResultSchema)
    error = fields.Nested(ErrorDetailSchema)
    reason = fields.String()
    created_at = fields.Float(allow_none=True)
    updated_at = fields.Float(allow_none=True)
    next_attempt_at = fields.Float()
    delivered_at = fields.Float()
    dead_at = fields.Float()
    message = fields.Dict()
    attempt_log = fields.List(fields.Dict())


BATCH_ITEM_STATUSES = ("queued", "duplicate", "invalid", "conflict")


class BatchItemSchema(Schema):
    index = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(BATCH_ITEM_STATUSES), metadata={
        "description": "queued: by this call; duplicate: its idempotency key already named job `id` (nothing "
                       "new queued); invalid: refused, see errors; conflict: its idempotency key names a "
                       "different message (job `id`)"})
    id = fields.String()
    errors = fields.Dict()


class BatchResponseSchema(Schema):
    queued = fields.Integer(required=True, metadata={"description": "jobs this call queued, each counted once"})
    duplicates = fields.Integer(required=True)
    invalid = fields.Integer(required=True)
    conflicts = fields.Integer(required=True)
    results = fields.List(fields.Nested(BatchItemSchema), required=True)


class DeadLetterSchema(Schema):
    id = fields.String(required=True)
    account = fields.String(allow_none=True)
    recipient = fields.String(allow_none=True)
    kind = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    message = fields.Raw(allow_none=True)
    reason = fields.String(allow_none=True)
    error = fields.Dict(allow_none=True)
    attempts = fields.List(fields.Dict())
    dead_at = fields.Float()


class DeadLetterQuerySchema(Schema):
    account = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10_000))


def _message_body() -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{DOCUMENT_SCHEMAS[k].__name__}"} for k in KINDS]
    return {"required": True, "content": {"application/json": {"schema": {
        "oneOf": refs, "discriminator": {"propertyName": "kind"}}}}}


def _refused(exc: InvalidMessage) -> None:
    abort(422, errors={"json": exc.normalized_messages()}, message=str(exc))


def _json_body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        abort(422, errors={"json": {"_schema": ["the body must be a JSON document"]}})
    return body


@blp.route("/messages", methods=["POST"])
@blp.doc(requestBody=_message_body(), parameters=[{
    "in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string", "maxLength": 200},
    "description": "the same key for the same account returns the original job within the window"}])
@blp.response(202, JobIdSchema, description="queued; poll the Location")
@blp.alt_response(409, description="the Idempotency-Key already names a different message; nothing was queued")
@blp.alt_response(422, description="the message broke a rule; errors name each field")
@blp.alt_response(503, description="the broker did not take the message; nothing was queued")
def post_message():
    """Queue one message."""
    document = _json_body()
    if isinstance(document, dict) and request.headers.get("Idempotency-Key"):
        document = {**document, "idempotency_key": request.headers["Idempotency-Key"]}
    try:
        job = send(document)
    except InvalidMessage as exc:
        _refused(exc)
    except IdempotencyConflict as exc:
        abort(409, message=str(exc))
    except EnqueueError as exc:
        abort(503, message=str(exc))
    return {"id": job.id}, 202, {"Location": f"/v1/messages/{job.id}"}


@blp.route("/messages:batch", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["messages"], "properties": {"messages": {
        "type": "array", "maxItems": MAX_BATCH, "items": _message_body()["content"]["application/json"]["schema"]}}}}}})
@blp.response(200, BatchResponseSchema, description="per-item results; valid items are queued")
@blp.alt_response(422, description="the body is not a list of at most 1000 messages")
@blp.alt_response(503, description="the broker did not take the batch; nothing was queued")
def post_batch():
    """Queue up to 1,000 messages; invalid ones are reported by index, the valid ones still queued."""
    body = _json_body()
    documents = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(documents, list) or len(documents) > MAX_BATCH:
        abort(422, errors={"json": {"messages": [f"must be a list of at most {MAX_BATCH} messages"]}})
    try:
        batch = send_many(documents)
    except EnqueueError as exc:
        abort(503, message=str(exc))
    results: list[dict[str, Any]] = []
    for index, job in enumerate(batch.jobs):
        error = batch.errors.get(index)
        if isinstance(error, IdempotencyConflict):
            results.append({"index": index, "status": "conflict", "id": error.job_id,
                            "errors": {"idempotency_key": [str(error)]}})
        elif error is not None:
            results.append({"index": index, "status": "invalid", "errors": error.normalized_messages()})
        else:
            status = "duplicate" if index in batch.duplicates else "queued"
            results.append({"index": index, "status": status, "id": job.id})
    counts = Counter(item["status"] for item in results)
    return {"queued": counts["queued"], "duplicates": counts["duplicate"], "invalid": counts["invalid"],
            "conflicts": counts["conflict"], "results": results}


@blp.route("/messages/<job_id>", methods=["GET"])
@blp.response(200, StatusSchema)
@blp.alt_response(404, description="no such job (or it expired)")
def get_message(job_id: str):
    """The job's status: queued, sending, retrying, delivered, dead or unknown."""
    try:
        return get_job(job_id).info()
    except JobNotFound as exc:
        abort(404, message=str(exc))


@blp.route("/dead-letters", methods=["GET"])
@blp.arguments(DeadLetterQuerySchema, location="query")
@blp.response(200, DeadLetterSchema(many=True))
def list_dead_letters(query: dict[str, Any]):
    """Dead messages, oldest first, with every attempt and the reason."""
    from workers import dlq

    return dlq.list_entries(account=query.get("account"), limit=query["limit"])


@blp.route("/dead-letters/<job_id>/replay", methods=["POST"])
@blp.response(202, JobIdSchema)
@blp.alt_response(404, description="no such dead letter")
def replay_dead_letter(job_id: str):
    """Send a dead message again under its job id."""
    from workers import dlq

    if not dlq.replay(job_id):
        abort(404, message=f"no dead-letter entry {job_id}")
    return {"id": job_id}, 202, {"Location": f"/v1/messages/{job_id}"}


def _healthz():
    from producers.celery_app import get_app
    from producers.store import get_redis

    health: dict[str, Any] = {"redis": False, "workers": 0}
    try:
        health["redis"] = bool(get_redis().ping())
        health["workers"] = len(get_app().control.ping(timeout=1.0) or [])
    except Exception as exc:  # report, never crash the probe
        health["error"] = type(exc).__name__
    ok = health["redis"] and health["workers"] > 0
    return jsonify({"ok": ok, **health}), 200 if ok else 503


def create_app(*, api_keys: list[str] | None = None, require_keys: bool = True) -> Flask:
    """The WSGI app (``gunicorn 'producers.api:create_app()'``). Keys default to ``IGSEND_API_KEYS``."""
    keys = api_keys if api_keys is not None else [
        k.strip() for k in os.environ.get("IGSEND_API_KEYS", "").split(",") if k.strip()]
    if require_keys and not keys:
        raise RuntimeError("IGSEND_API_KEYS is empty: the HTTP API does not run without keys outside the demo")
    app = Flask("igsend")
    app.config.update(
        API_TITLE="igsend", API_VERSION="1", OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
                          "security": [{"bearer": []}] if keys else []},
    )
    api = Api(app)
    for schema in DOCUMENT_SCHEMAS.values():
        api.spec.components.schema(schema.__name__, schema=schema)
    api.register_blueprint(blp)
    app.add_url_rule("/healthz", "healthz", _healthz)

    @app.before_request
    def _authenticate():
        if not keys or request.path in ("/healthz", "/openapi.json"):
            return None
        header = request.headers.get("Authorization", "")
        supplied = header[7:] if header.startswith("Bearer ") else ""
        if not any(hmac.compare_digest(supplied, key) for key in keys):
            return jsonify({"code": 401, "status": "Unauthorized",
                            "message": "send a key from IGSEND_API_KEYS as Authorization: Bearer KEY"}), 401
        return None

    return app
