"""Messages: POST /v1/messages and /v1/messages:batch, GET and DELETE /v1/messages/{id}; the /v1 blueprint."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from flask import current_app, request
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from igsend.core import routing, waiting
from igsend.core.errors import CancelRefused
from producers import (
    EnqueueError,
    IdempotencyConflict,
    InvalidMessage,
    Job,
    JobNotFound,
    JobStatus,
    RedisFull,
    get_job,
    send,
    send_many,
)
from producers.api.auth import scope
from producers.api.errors import body_errors, common_errors, fails
from producers.api.jobs import (
    LAST_ERROR,
    LOCATION,
    STORED_MESSAGE,
    AttemptSchema,
    JobIdSchema,
    JobSchema,
    checked_id,
    links,
)
from producers.api.openapi import MAX_BATCH, json_request, ref
from producers.api.redis_check import check_redis
from producers.api_keys import OPERATE, READ, SEND
from producers.jobs import NOT_FOUND_GRACE
from schemas.messages import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY, load_message

#: The /v1 blueprint: the messages' routes, and dead letters nested in it (producers.api.dead_letters).
blp = Blueprint("messages", __name__, url_prefix="/v1", description="Send messages and read their outcome")


class QueuedSchema(JobIdSchema):
    warnings = fields.List(fields.String(), metadata={
        "description": "e.g. that no worker is running: the message is queued and waits for one"})


class ResultSchema(Schema):
    recipient_id = fields.String(required=True)
    message_id = fields.String()


class StatusSchema(JobSchema):
    status = fields.String(required=True, validate=validate.OneOf(
        [s.value for s in JobStatus if s is not JobStatus.NOT_FOUND]))
    attempts = fields.Integer(required=True)
    result = fields.Nested(ResultSchema, metadata={"description": "Meta's answer, once delivered"})
    error = fields.Raw(metadata=LAST_ERROR)
    reason = fields.String()
    created_at = fields.Float(allow_none=True)
    updated_at = fields.Float(allow_none=True)
    next_attempt_at = fields.Float()
    delivered_at = fields.Float()
    dead_at = fields.Float()
    read_at = fields.String(allow_none=True, metadata={
        "description": "ISO 8601: when the person first read the message (Meta's messaging_seen webhook, with "
                       "the webhook receiver set up); null until then. The status stays delivered"})
    message = fields.Raw(metadata=STORED_MESSAGE)
    attempt_log = fields.List(fields.Nested(AttemptSchema))


BATCH_ITEM_STATUSES = ("queued", "duplicate", "invalid", "conflict")


class BatchItemSchema(Schema):
    index = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(BATCH_ITEM_STATUSES), metadata={
        "description": "queued: by this call; duplicate: its idempotency key already named job `id` (nothing "
                       "new queued); invalid: refused, see errors; conflict: its idempotency key names a "
                       "different message (job `id`)"})
    id = fields.String()
    errors = fields.Raw(metadata={"allOf": [ref("FieldErrors")],
                                  "description": "invalid or conflict: field -> messages"})


class BatchResponseSchema(Schema):
    queued = fields.Integer(required=True, metadata={"description": "jobs this call queued, each counted once"})
    duplicates = fields.Integer(required=True)
    invalid = fields.Integer(required=True)
    conflicts = fields.Integer(required=True)
    results = fields.List(fields.Nested(BatchItemSchema), required=True)


def _refused(exc: InvalidMessage) -> None:
    abort(422, errors={"json": exc.normalized_messages()}, message=str(exc))


def _json_body() -> Any:
    if not request.is_json:
        abort(422, errors={"json": {"_schema": ["the body must be a JSON document (Content-Type: application/json)"]}})
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH, declared or streamed
    try:
        return json.loads(raw)
    except RecursionError:
        # Python's parser recurses once per level: 100,000 '[' exhaust the stack, which is the client's doing.
        abort(400, message="the body is nested too deeply to be a message")
    except ValueError as exc:  # also UnicodeDecodeError: the body is not UTF-8
        abort(400, message=f"the body is not valid JSON: {exc}")


def _accounts_sent() -> list[str]:
    """The accounts a POST of messages names (read without validating: the handler refuses what is wrong)."""
    try:
        document = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        return []
    if request.endpoint == f"{blp.name}.post_batch":
        documents = document.get("messages") if isinstance(document, dict) else None
    else:
        documents = [document]
    accounts = [item.get("account", "default") for item in documents or [] if isinstance(item, dict)]
    return [account for account in dict.fromkeys(accounts) if isinstance(account, str)]


@blp.before_request
def _redis_first() -> None:
    """Every routed /v1 call (dead letters too) needs Redis, its group's with IGSEND_GROUPS: 503 at once rather
    than after the shared client's retries. Flask runs this after the app's guard (keys, scopes, rates)."""
    posting = request.method == "POST" and request.endpoint in (f"{blp.name}.post_message", f"{blp.name}.post_batch")
    check_redis(_accounts_sent if posting else None)


@blp.route("/messages", methods=["POST"])
@blp.doc(operationId="sendMessage", requestBody=json_request("Message"), parameters=[{
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "the same key for the same account returns the original job within the window; the same key "
                   "with a different message answers 409. Empty: no key. It wins over the body's "
                   "`idempotency_key`, which must still keep its rules"}],
        responses={202: {"links": links("/id", "getMessage", "cancelMessage")}})
@blp.response(202, QueuedSchema, description="queued (or, for a repeated Idempotency-Key, already queued); poll "
                                             "the Location; warnings say when no worker is running", headers=LOCATION)
@fails(blp, 409, "the Idempotency-Key already names a different message; nothing was queued")
@fails(blp, 422, "the message broke a rule; errors name each field")
@body_errors(blp)
@common_errors(blp)
@scope(blp, SEND)
def post_message() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue one message."""
    document = _json_body()
    header = request.headers.get("Idempotency-Key")
    if isinstance(document, dict) and header:
        if "idempotency_key" in document:
            try:  # the header wins, but the body is still held to its rules: a broken field is not ignored
                load_message(document)
            except InvalidMessage as exc:
                _refused(exc)
        document = {**document, "idempotency_key": header}
    try:
        job = send(document)
    except InvalidMessage as exc:  # UnknownAccount too: 422 naming the field `account`
        _refused(exc)
    except IdempotencyConflict as exc:
        abort(409, message=str(exc))
    except RedisFull as exc:
        abort(503, message=str(exc), headers={"Retry-After": str(exc.retry_after)})
    except EnqueueError as exc:
        abort(503, message=str(exc))
    from igsend.core import presence

    with routing.for_job(job.id):  # the group's workers (IGSEND_GROUPS); its id names it
        warnings = presence.current().warnings()  # cached: the check before queuing just read it
    return {"id": job.id, "warnings": warnings}, 202, {"Location": f"/v1/messages/{job.id}"}


@blp.route("/messages:batch", methods=["POST"])
@blp.doc(operationId="sendBatch", requestBody=json_request("BatchRequest"))
@blp.response(200, BatchResponseSchema, description="per-item results; valid items are queued")
@fails(blp, 422, "the body is not a list of at most 1000 messages")
@body_errors(blp)
@common_errors(blp)
@scope(blp, SEND)
def post_batch() -> dict[str, Any]:
    """Queue up to 1,000 messages; invalid ones are reported by index, the valid ones still queued."""
    body = _json_body()
    documents = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(documents, list) or len(documents) > MAX_BATCH:
        abort(422, errors={"json": {"messages": [f"must be a list of at most {MAX_BATCH} messages"]}})
    try:
        batch = send_many(documents)
    except RedisFull as exc:
        abort(503, message=str(exc), headers={"Retry-After": str(exc.retry_after)})
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
            assert job is not None  # no error: the message was queued (BatchResult's invariant)
            status = "duplicate" if index in batch.duplicates else "queued"
            results.append({"index": index, "status": status, "id": job.id})
    counts = Counter(item["status"] for item in results)
    return {"queued": counts["queued"], "duplicates": counts["duplicate"], "invalid": counts["invalid"],
            "conflicts": counts["conflict"], "results": results}


#: The longest ``?wait=`` a GET may ask for, in seconds.
MAX_WAIT = 30.0


class WaitQuerySchema(Schema):
    wait = fields.Float(validate=validate.Range(
        min=0, max=MAX_WAIT, min_inclusive=False, error=f"must be more than 0 and at most {MAX_WAIT:g} (seconds)"),
        metadata={"exclusiveMinimum": True,
                  "description": f"seconds (more than 0, at most {MAX_WAIT:g}) to wait for the job to end: the "
                                 "answer comes as soon as it is final, or after this long with its status then"})


@blp.route("/messages/<job_id>", methods=["GET"])
@blp.doc(operationId="getMessage")
@blp.arguments(WaitQuerySchema, location="query", as_kwargs=True)
@blp.response(200, StatusSchema)
@fails(blp, 404, "no such job (or it expired)")
@common_errors(blp)
@scope(blp, READ)
def get_message(job_id: str, wait: float | None = None) -> dict[str, Any]:
    """The job's status: queued, scheduled, sending, retrying, delivered, dead, unknown or cancelled.

    With `?wait=N` the answer comes as soon as the job is final, or after N seconds with its status then (503 with
    Retry-After when the API process already holds its most waiting requests)."""
    try:
        job = get_job(checked_id(job_id))
        if wait is None:
            return job.info()
        _wait_for(job, wait)
        with waiting.reading():  # woken with many others: their reads share the process's Redis connections
            return job.info()
    except JobNotFound as exc:
        abort(404, message=str(exc))


def _wait_for(job: Job, seconds: float) -> None:
    """Hold the request until the job is final or ``seconds`` pass, woken by the outcome stream (one reader
    thread per process and Redis: igsend.core.waiting), in one of the process's waiting slots: a wait takes a
    server thread, so at most ``max_waiting`` requests wait at once and the others' calls keep their threads."""
    slots: threading.BoundedSemaphore = current_app.extensions["igsend_waiting"]
    if not slots.acquire(blocking=False):
        abort(503, message=f"this API process already holds its {current_app.config['WAITING_REQUESTS_MAX']} "
                           "waiting requests: ask again without wait, or in a second",
              headers={"Retry-After": "1"})
    try:
        with routing.for_job(job.id):  # the reader of the group's Redis (IGSEND_GROUPS)
            status = waiting.wait_for(job.id, job.status, seconds, not_found_grace=NOT_FOUND_GRACE)
    finally:
        slots.release()
    if status is JobStatus.NOT_FOUND:
        raise JobNotFound(f"no job {job.id} (wrong id, or expired)")


@blp.route("/messages/<job_id>", methods=["DELETE"])
@blp.doc(operationId="cancelMessage")
@blp.response(200, StatusSchema, description="cancelled: it will never be sent")
@fails(blp, 404, "no such job (or it expired)")
@fails(blp, 409, "the job is sending or finished: it cannot be taken back")
@common_errors(blp)
@scope(blp, OPERATE)
def cancel_message(job_id: str) -> dict[str, Any]:
    """Cancel a queued, scheduled or retrying message: it ends `cancelled` and is never sent."""
    job = Job(checked_id(job_id))
    try:
        job.cancel()
    except JobNotFound as exc:
        abort(404, message=str(exc))
    except CancelRefused as exc:
        abort(409, message=str(exc))
    return job.info()
