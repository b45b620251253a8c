"""The HTTP producer API (flask-smorest): enqueue, poll, and work the DLQ from any language.

The OpenAPI document at ``/openapi.json`` is generated from the same marshmallow schemas the Python API
validates with; a refused message answers 422 with marshmallow's field messages. Keys come from
``IGSEND_API_KEYS`` (comma-separated) and are sent as ``Authorization: Bearer KEY`` (scheme in any case); each
operation needs one scope (``x-igsend-scope`` in the document; 403 naming it without), and a key with ``@N`` gets
429 with ``Retry-After`` past N requests per second (:mod:`producers.api_keys`).

Every answer that is not a success has one JSON shape, ``{"code": 404, "status": "Not Found", "message": "..."}``,
plus ``errors`` (location -> field -> messages) on a 422. Limits: a body of at most ``MAX_BODY_BYTES`` (4 MiB,
413 beyond), a URL of at most ``MAX_URL_CHARS`` (2,048 characters, 414 beyond), job ids of 1-255 printable ASCII
characters (404 otherwise). When Redis does not answer within about a second every ``/v1`` call answers 503.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

import redis
from flask import Flask, jsonify, request
from flask_smorest import Api, Blueprint, abort
from kombu.exceptions import OperationalError as BrokerError
from marshmallow import Schema, fields, validate
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from werkzeug.exceptions import HTTPException

from igsend.core import routing
from igsend.core.errors import CancelRefused, ReplayRefused, UnknownAccount
from igsend.core.groups import Group, group_named_by
from igsend.core.settings import get_settings
from igsend.core.store import redis_from_url, redis_warnings
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
from producers.api_keys import OPERATE, READ, SEND, ApiKey, find_key, login_wait, parse_keys, retry_after
from producers.console import console, init_console
from producers.webhooks import PATH as WEBHOOK_PATH
from producers.webhooks import start_inbox, webhooks
from schemas import KINDS, SCHEMAS
from schemas.messages import BaseSchema

MAX_BATCH = 1000
#: The largest request body. A batch of 1,000 text messages at the 1,000-byte limit, every character
#: \u-escaped as json.dumps writes non-ASCII (up to 3 bytes of JSON per byte of UTF-8), with the longest ids
#: and 200-character idempotency keys of characters JSON escapes, is 3.6 MB: every valid batch of text fits
#: (tests/test_api_hostile.py), and nothing much bigger is read into memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The longest URL (path and query). The longest legitimate one is a 255-character job id under /v1.
MAX_URL_CHARS = 2048
JOB_ID = re.compile(r"[!-~]{1,255}")  # what a Celery task id can be in practice: printable ASCII, no spaces
AUTH_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="igsend"'}
#: Paths served without an API key: the health probe, the OpenAPI document, and Meta's webhooks (signed by Meta).
KEYLESS_PATHS = ("/healthz", "/openapi.json", WEBHOOK_PATH)
REDIS_DOWN = "Redis is unavailable: nothing was done; try again shortly"
FAILED_MIDWAY = "Redis or the broker failed during the call: check the job's status, then try again"

log = logging.getLogger("igsend.api")

blp = Blueprint("messages", __name__, url_prefix="/v1", description="Send messages and read their outcome")


def _document_schema(kind: str) -> type[Schema]:
    """The kind's schema with ``kind`` pinned to its value, so the OpenAPI oneOf is unambiguous."""
    pinned = fields.String(required=True, validate=validate.OneOf([kind]), metadata={"description": "message kind"})
    name = "".join(part.capitalize() for part in kind.split("_"))  # quick_replies -> QuickRepliesMessage
    return type(f"{name}Message", (SCHEMAS[kind],), {"kind": pinned})


DOCUMENT_SCHEMAS = {kind: _document_schema(kind) for kind in KINDS}


def _server_default(converter: Any, field: fields.Field[Any], ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Message fields the server fills in (``account``, ``reaction``, ...) are documented without ``default``:
    openapi-typescript types a property with a default as always present, so a client would have to send it.
    The description says what the server uses instead."""
    if isinstance(field.parent, BaseSchema) and "default" in ret:
        default = ret.pop("default")
        if default is not None:
            ret["description"] = f"{ret.get('description', '')} (default {json.dumps(default)})".lstrip()
    return {}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


#: Any message: one of the kinds, told apart by ``kind``. The mapping names each kind's value, so generators
#: (openapi-typescript, openapi-python-client, openapi-generator) type ``kind`` as "text", not "TextMessage".
MESSAGE_COMPONENT: dict[str, Any] = {
    "description": "a message document: one of the kinds, chosen by `kind`",
    "oneOf": [_ref(DOCUMENT_SCHEMAS[kind].__name__) for kind in KINDS],
    "discriminator": {"propertyName": "kind", "mapping": {
        kind: _ref(DOCUMENT_SCHEMAS[kind].__name__)["$ref"] for kind in KINDS}},
}
#: marshmallow's error messages: field -> its messages, or for a nested field (list items by index) the same
#: structure one level down.
FIELD_ERRORS_COMPONENT: dict[str, Any] = {
    "type": "object",
    "description": "field -> what is wrong with it (a nested field or list item: the same structure again)",
    "additionalProperties": {"anyOf": [{"type": "array", "items": {"type": "string"}}, _ref("FieldErrors")]},
}
BATCH_REQUEST_COMPONENT: dict[str, Any] = {
    "type": "object", "required": ["messages"],
    "properties": {"messages": {"type": "array", "maxItems": MAX_BATCH, "items": _ref("Message")}},
}


class ErrorSchema(Schema):
    """The one shape of every error answer."""

    code = fields.Integer(required=True, metadata={"description": "the HTTP status code"})
    status = fields.String(required=True, metadata={"description": "the HTTP status phrase"})
    message = fields.String(required=True, metadata={"description": "what went wrong, for a person"})
    errors = fields.Raw(metadata={
        "type": "object", "additionalProperties": _ref("FieldErrors"),
        "description": "on 422: where (json, query) -> field -> messages"})


class _Api(Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        payload, code, headers = super().handle_http_exception(error)
        if code == 413 and "message" not in payload:
            payload["message"] = f"the body is larger than {MAX_BODY_BYTES} bytes: split the batch"
        payload.setdefault("message", error.description or error.name)
        return payload, code, headers


#: endpoint -> the scope it needs (see _scope); an endpoint of the API's blueprints missing here needs operate
SCOPE_OF: dict[str, str] = {}


def _scope(scope: str) -> Callable[[Any], Any]:
    """The operation needs a key with ``scope``: enforced by the app's guard, declared in the OpenAPI document
    (``x-igsend-scope``: a bearer scheme's security requirement cannot carry scopes in OpenAPI 3.0) with its
    403 answer."""

    def decorate(func: Any) -> Any:
        SCOPE_OF[f"{blp.name}.{func.__name__}"] = scope
        func = blp.doc(**{"x-igsend-scope": scope})(func)
        return blp.alt_response(403, schema=ErrorSchema, description=f"the key lacks the scope `{scope}`")(func)
    return decorate


def _fails(code: int, description: str, headers: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Document an error answer of a route with the shared error schema."""
    return cast(Callable[[Any], Any], blp.alt_response(code, schema=ErrorSchema, description=description,
                                                       headers=headers))


def _common_errors(func: Any) -> Any:
    func = _fails(401, "no valid key: send Authorization: Bearer KEY", headers={"WWW-Authenticate": {
        "description": 'Bearer realm="igsend"', "schema": {"type": "string"}}})(func)
    func = _fails(414, f"the URL is longer than {MAX_URL_CHARS} characters")(func)
    func = _fails(429, "the key made more requests per second than its @N allows", headers={"Retry-After": {
        "description": "seconds to wait", "schema": {"type": "integer"}}})(func)
    return _fails(503, "Redis or the broker did not answer, or Redis is nearly full: nothing was done; try again",
                  headers={"Retry-After": {"description": "seconds to wait, when Redis is nearly full",
                                           "schema": {"type": "integer"}}})(func)


def _body_errors(func: Any) -> Any:
    func = _fails(400, "the body is not valid JSON, or is nested too deeply")(func)
    return _fails(413, f"the body is larger than {MAX_BODY_BYTES} bytes")(func)


class JobIdSchema(Schema):
    id = fields.String(required=True, metadata={"description": "the job id: poll GET /v1/messages/{id}"})


#: The Location header of a 202: where to poll.
LOCATION = {"Location": {"description": "/v1/messages/{id}: poll it for the outcome", "required": True,
                         "schema": {"type": "string"}}}


class QueuedSchema(JobIdSchema):
    warnings = fields.List(fields.String(), metadata={
        "description": "e.g. that no worker is running: the message is queued and waits for one"})


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


class AttemptSchema(Schema):
    """One entry of a job's attempt log: a POST to Meta, or an event such as a republish."""

    outcome = fields.String(required=True, metadata={
        "description": "delivered, transient, throttled, permanent, account_broken or unknown for a POST; "
                       "republished when the sweeper published a lost message again"})
    at = fields.Float(required=True, metadata={"description": "Unix time the POST started (or the event)"})
    attempt = fields.Integer(metadata={"description": "1 for the first POST"})
    latency_ms = fields.Float(allow_none=True)
    http_status = fields.Integer(allow_none=True)
    code = fields.Integer(allow_none=True, metadata={"description": "Graph error code"})
    subcode = fields.Integer(allow_none=True, metadata={"description": "Graph error_subcode"})
    message = fields.String(allow_none=True, metadata={"description": "Meta's message, or igsend's reason"})
    fbtrace_id = fields.String(allow_none=True)
    reason = fields.String(metadata={"description": "why an event happened"})


#: What a job was asked to send: a Message document, kept as received when a raw Celery body broke a rule.
STORED_MESSAGE = {"type": "object", "description": "the message document (see Message); a raw Celery body that "
                                                   "broke a rule is kept as it was received"}


#: The last error (an ErrorDetail), or null. Not allow_none=True: apispec documents that as "ErrorDetail or any
#: object", which generators turn into an untyped class.
LAST_ERROR = {"allOf": [_ref("ErrorDetail")], "nullable": True, "description": "the last error, if any"}


class JobSchema(Schema):
    """What every answer about one job begins with: the job, and what it sends from which account to whom (null
    where a raw Celery body did not say). A base only: the API answers with its Status and DeadLetter forms."""

    id = fields.String(required=True)
    kind = fields.String(allow_none=True)
    account = fields.String(allow_none=True)
    recipient = fields.String(allow_none=True)


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
    errors = fields.Raw(metadata={"allOf": [_ref("FieldErrors")],
                                  "description": "invalid or conflict: field -> messages"})


class BatchResponseSchema(Schema):
    queued = fields.Integer(required=True, metadata={"description": "jobs this call queued, each counted once"})
    duplicates = fields.Integer(required=True)
    invalid = fields.Integer(required=True)
    conflicts = fields.Integer(required=True)
    results = fields.List(fields.Nested(BatchItemSchema), required=True)


class DeadLetterSchema(JobSchema):
    status = fields.String(allow_none=True)
    message = fields.Raw(allow_none=True, metadata=STORED_MESSAGE)
    reason = fields.String(allow_none=True)
    error = fields.Raw(metadata=LAST_ERROR)
    attempts = fields.List(fields.Nested(AttemptSchema), metadata={"description": "every attempt, oldest first"})
    dead_at = fields.Float()


class HealthSchema(Schema):
    ok = fields.Boolean(required=True, metadata={"description": "Redis answers (messages can be queued)"})
    redis = fields.Boolean(required=True)
    workers = fields.Integer(required=True, metadata={"description": "workers whose heartbeat is alive"})
    workers_warning = fields.String(metadata={"description": "when no worker is alive: what to run"})
    warnings = fields.List(fields.String(), metadata={
        "description": "Redis settings that put messages at risk, one sentence each"})
    token_warnings = fields.List(fields.String(), metadata={
        "description": "accounts whose token expires within 7 days (or expired), or whose last token refresh or "
                       "check failed, one sentence each (docs: Tokens)"})
    error = fields.String(metadata={"description": "the type of the error a probe met"})


class GroupHealthSchema(HealthSchema):
    group = fields.String(required=True, metadata={"description": "the group's name (IGSEND_GROUPS)"})
    accounts = fields.List(fields.String(), required=True, metadata={"description": "the group's accounts"})


class HealthWithGroupsSchema(HealthSchema):
    groups = fields.List(fields.Nested(GroupHealthSchema), metadata={
        "description": "with IGSEND_GROUPS: each group's own probe; `ok` is then true when every group's Redis "
                       "answers, and the answer is 503 only when none does"})


class DeadLetterQuerySchema(Schema):
    account = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10_000))


def _json_request(component: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(component)}}}


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


def _checked_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        abort(404, message="no such job: a job id is 1-255 printable ASCII characters")
    return job_id


@blp.route("/messages", methods=["POST"])
@blp.doc(operationId="sendMessage", requestBody=_json_request("Message"), parameters=[{
    "in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string", "maxLength": 200},
    "description": "the same key for the same account returns the original job within the window; the same key "
                   "with a different message answers 409"}])
@blp.response(202, QueuedSchema, description="queued (or, for a repeated Idempotency-Key, already queued); poll "
                                             "the Location; warnings say when no worker is running", headers=LOCATION)
@_fails(409, "the Idempotency-Key already names a different message; nothing was queued")
@_fails(422, "the message broke a rule; errors name each field")
@_body_errors
@_common_errors
@_scope(SEND)
def post_message() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue one message."""
    document = _json_body()
    if isinstance(document, dict) and request.headers.get("Idempotency-Key"):
        document = {**document, "idempotency_key": request.headers["Idempotency-Key"]}
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
@blp.doc(operationId="sendBatch", requestBody=_json_request("BatchRequest"))
@blp.response(200, BatchResponseSchema, description="per-item results; valid items are queued")
@_fails(422, "the body is not a list of at most 1000 messages")
@_body_errors
@_common_errors
@_scope(SEND)
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


@blp.route("/messages/<job_id>", methods=["GET"])
@blp.doc(operationId="getMessage")
@blp.response(200, StatusSchema)
@_fails(404, "no such job (or it expired)")
@_common_errors
@_scope(READ)
def get_message(job_id: str) -> dict[str, Any]:
    """The job's status: queued, scheduled, sending, retrying, delivered, dead, unknown or cancelled."""
    try:
        return get_job(_checked_id(job_id)).info()
    except JobNotFound as exc:
        abort(404, message=str(exc))


@blp.route("/messages/<job_id>", methods=["DELETE"])
@blp.doc(operationId="cancelMessage")
@blp.response(200, StatusSchema, description="cancelled: it will never be sent")
@_fails(404, "no such job (or it expired)")
@_fails(409, "the job is sending or finished: it cannot be taken back")
@_common_errors
@_scope(OPERATE)
def cancel_message(job_id: str) -> dict[str, Any]:
    """Cancel a queued, scheduled or retrying message: it ends `cancelled` and is never sent."""
    job = Job(_checked_id(job_id))
    try:
        job.cancel()
    except JobNotFound as exc:
        abort(404, message=str(exc))
    except CancelRefused as exc:
        abort(409, message=str(exc))
    return job.info()


@blp.route("/dead-letters", methods=["GET"])
@blp.doc(operationId="listDeadLetters")
@blp.arguments(DeadLetterQuerySchema, location="query")
@blp.response(200, DeadLetterSchema(many=True))
@_common_errors
@_scope(OPERATE)
def list_dead_letters(query: dict[str, Any]) -> list[dict[str, Any]]:
    """Dead messages, oldest first, with every attempt and the reason."""
    from igsend.core import dlq

    entries: list[dict[str, Any]] = []
    for group in routing.every_group():  # with IGSEND_GROUPS: every group's DLQ, group after group
        with routing.in_group(group):
            entries += dlq.list_entries(account=query.get("account"), limit=query["limit"] - len(entries))
        if len(entries) >= query["limit"]:
            break
    return entries


@blp.route("/dead-letters/<job_id>/replay", methods=["POST"])
@blp.doc(operationId="replayDeadLetter")
@blp.response(202, JobIdSchema, description="queued again under its job id; poll the Location", headers=LOCATION)
@_fails(404, "no such dead letter")
@_fails(409, "the job is not dead now (e.g. it was delivered): a replay could send it twice")
@_common_errors
@_scope(OPERATE)
def replay_dead_letter(job_id: str) -> tuple[dict[str, str], int, dict[str, str]]:
    """Send a dead message again under its job id."""
    from igsend.core import dlq

    try:
        with routing.for_job(_checked_id(job_id)):
            replayed = dlq.replay(job_id)
    except ReplayRefused as exc:
        abort(409, message=str(exc))
    if not replayed:
        abort(404, message=f"no dead-letter entry {job_id}")
    return {"id": job_id}, 202, {"Location": f"/v1/messages/{job_id}"}


@lru_cache(maxsize=8)
def _quick_redis(url: str) -> redis.Redis:
    """A client that gives up at once. The shared client (igsend.core.store) retries with backoff so that workers
    and scripts ride out a Redis restart, which would hold an HTTP caller for ~10 s and then answer 500; the API
    tells its caller 503 within a second instead, and the caller retries."""
    return redis_from_url(url, decode_responses=True, socket_connect_timeout=1, socket_timeout=1,
                                retry=Retry(NoBackoff(), 0))


def _redis_answers() -> bool:
    """Whether the process's Redis answers (without IGSEND_GROUPS)."""
    try:
        return bool(_quick_redis(get_settings().redis_url).ping())
    except RedisError:
        return False


def _group_answers(group: Group) -> bool:
    try:
        with routing.in_group(group):  # a sentinel:// group's primary name
            return bool(_quick_redis(group.redis_url).ping())
    except RedisError:
        return False


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


def _groups_used() -> list[Group]:
    """The groups a /v1 call will work on, known without asking Redis: the account(s) of the messages sent, the
    group a job id names, the account asked about; every group otherwise (a list of them all, or an id that names
    no group, looked for in each)."""
    known = routing.groups()
    job_id = (request.view_args or {}).get("job_id")
    if isinstance(job_id, str):
        name = group_named_by(job_id)
        return [known[name]] if name in known else list(known.values())
    posting = request.method == "POST" and request.endpoint in (f"{blp.name}.post_message",
                                                                f"{blp.name}.post_batch")
    accounts = _accounts_sent() if posting else [request.args["account"]] if request.args.get("account") else []
    if not accounts:
        return [] if posting else list(known.values())  # a body naming no account is refused, Redis or not
    used: dict[str, Group] = {}
    for account in accounts:
        try:
            group = routing.group_of_account(account)
        except UnknownAccount:
            continue  # refused by the handler, 422 naming `account`
        if group is not None:
            used[group.name] = group
    return list(used.values())


def _check_redis() -> None:
    """Answer 503 at once when the Redis a /v1 call needs does not answer, rather than after the shared client's
    retries (~10 s). With IGSEND_GROUPS only the groups the call uses are asked: one group down fails its own
    accounts' calls, naming it, and the other groups keep working."""
    if not routing.groups():
        if not _redis_answers():
            abort(503, message=REDIS_DOWN)
        return
    down = [group for group in _groups_used() if not _group_answers(group)]
    if down:
        names = ", ".join(group.name for group in down)
        accounts = ", ".join(account for group in down for account in group.accounts)
        abort(503, message=f"the Redis of group {names} (accounts {accounts}) does not answer: nothing was done; "
                           "try again shortly (the other groups are not affected)")


health_blp = Blueprint("health", __name__, description="Is the service able to send")


@health_blp.route("/healthz", methods=["GET"])
@health_blp.doc(operationId="health", security=[])
@health_blp.response(200, HealthWithGroupsSchema, description="Redis answers (workers are reported, not required)")
@health_blp.alt_response(503, schema=HealthWithGroupsSchema, description="Redis does not answer")
def healthz() -> Any:
    """Whether Redis answers, how many workers announced themselves, and what puts messages at risk; no key.
    With IGSEND_GROUPS, the same for each group under ``groups``, summed up at the top."""
    groups = [group for group in routing.every_group() if group]
    if not groups:
        health = _probe(get_settings().redis_url)
        return jsonify({"ok": health["redis"], **health}), 200 if health["redis"] else 503
    probes = [{"group": group.name, "accounts": list(group.accounts), **_probe(group.redis_url, group)}
              for group in groups]
    total: dict[str, Any] = {
        "ok": all(probe["redis"] for probe in probes), "redis": all(probe["redis"] for probe in probes),
        "workers": sum(probe["workers"] for probe in probes),
        "warnings": [f"group {probe['group']}: {warning}" for probe in probes for warning in probe.get("warnings", [])],
        "token_warnings": [f"group {probe['group']}: {warning}" for probe in probes
                           for warning in probe.get("token_warnings", [])],
        "groups": probes}
    down = [probe["group"] for probe in probes if not probe["redis"]]
    if down:
        total["error"] = f"Redis of group(s) {', '.join(down)} does not answer"
    return jsonify(total), 200 if len(down) < len(probes) else 503


def _probe(url: str, group: Group | None = None) -> dict[str, Any]:
    """One Redis's health: whether it answers, its workers, what puts its messages at risk."""
    from igsend.core import presence
    from igsend.core.account_state import token_warnings

    health: dict[str, Any] = {"redis": False, "workers": 0}
    # Each probe on its own: a failing one is reported, never raised; the workers are read from their
    # heartbeats (igsend.core.presence), not pinged, and not read when Redis is down.
    try:
        with routing.in_group(group):  # settings-driven checks (DLQ cap, replica acks) read this group's
            client = _quick_redis(url)
            health["redis"] = bool(client.ping())
            health["warnings"] = redis_warnings(client)  # e.g. eviction on, or no persistence: reported, not fatal
            health["workers"] = presence.read(client).alive
            health["token_warnings"] = token_warnings(client=client)  # reported, not fatal, as the Redis warnings
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not crash
        health["error"] = type(exc).__name__
    if health["redis"] and not health["workers"]:
        # Reported, not fatal: the API still queues, and the messages wait for a worker.
        health["workers_warning"] = presence.no_worker_warning()
    return health


def _header_bytes(value: str) -> bytes:
    # WSGI servers hand header bytes over as latin-1 text: encoding back gives what the client sent. Comparing
    # bytes also keeps hmac.compare_digest from raising on non-ASCII text.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _bearer_key(header: str, keys: list[ApiKey]) -> ApiKey | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235: the scheme is case-insensitive
        return None
    return find_key(_header_bytes(credentials.strip()), keys)


def configured_keys(api_keys: list[str] | None = None) -> list[ApiKey]:
    """The keys of ``api_keys`` (entries), default ``IGSEND_API_KEYS``; a bad entry raises ConfigurationError."""
    if api_keys is not None:
        return parse_keys(",".join(api_keys))
    return parse_keys(os.environ.get("IGSEND_API_KEYS", ""))


def throttled(key: ApiKey) -> None:
    """Refuse (429 with Retry-After) a request past the key's @N requests per second. When Redis does not answer
    the request goes on: the limit protects Redis, and a call that needs it answers 503 anyway. With several groups
    the counts live in the first group's Redis (the API's own IGSEND_REDIS_URL need not be a Redis then)."""
    try:
        with routing.in_group(routing.every_group()[0]):
            wait = retry_after(_quick_redis(get_settings().redis_url), key)
    except RedisError:
        return
    if wait:
        abort(429, message=f"this key may make {key.rate:g} requests per second: try again in {wait} s",
              headers={"Retry-After": str(wait)})


def login_throttle(address: str) -> int:
    """Seconds ``address`` must wait before another console login (0: go on, the try is counted); counted where
    :func:`throttled` counts, and not at all while that Redis does not answer."""
    try:
        with routing.in_group(routing.every_group()[0]):
            return login_wait(_quick_redis(get_settings().redis_url), address)
    except RedisError:
        return 0


def create_app(*, api_keys: list[str] | None = None, require_keys: bool = True) -> Flask:
    """The WSGI app (``gunicorn 'producers.api:create_app()'``). Keys default to ``IGSEND_API_KEYS``."""
    keys = configured_keys(api_keys)
    if require_keys and not keys:
        raise RuntimeError("IGSEND_API_KEYS is empty: the HTTP API does not run without keys outside the demo")
    app = Flask("igsend")
    app.config.update(
        API_TITLE="igsend", API_VERSION="1", OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
                          "security": [{"bearer": []}] if keys else [],
                          # relative: the API's own origin, wherever it is served (generators take a base URL)
                          "servers": [{"url": "/", "description": "the server that serves this document"}]},
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    api = _Api(app)
    api.ma_plugin.converter.add_attribute_function(_server_default)
    for schema in DOCUMENT_SCHEMAS.values():
        api.spec.components.schema(schema.__name__, schema=schema)
    api.spec.components.schema("ErrorDetail", schema=ErrorDetailSchema)
    api.spec.components.schema("Message", component=MESSAGE_COMPONENT)
    api.spec.components.schema("FieldErrors", component=FIELD_ERRORS_COMPONENT)
    api.spec.components.schema("BatchRequest", component=BATCH_REQUEST_COMPONENT)
    api.register_blueprint(blp)
    api.register_blueprint(health_blp)
    app.register_blueprint(webhooks)  # Meta's, not the apps': outside the OpenAPI document
    # the operator's console (HTML, session login): keys authenticate the JSON blueprints, so CSRF skips them
    init_console(app, keys, throttle=throttled, login_throttle=login_throttle, exempt=[blp, health_blp, webhooks],
                 links={"flower": os.environ.get("IGSEND_UI_FLOWER_URL", "").strip(),
                        "grafana": os.environ.get("IGSEND_UI_GRAFANA_URL", "").strip()})

    @app.before_request
    def _guard() -> None:
        if len(request.path) + len(request.query_string) > MAX_URL_CHARS:
            abort(414, message=f"the URL is longer than {MAX_URL_CHARS} characters")
        if request.blueprint == console.name or request.path.startswith(console.url_prefix or "/ui"):
            return  # the console: its own login page and session cookie (producers.console)
        if keys and request.path not in KEYLESS_PATHS:
            key = _bearer_key(request.headers.get("Authorization", ""), keys)
            if key is None:
                abort(401, message="send a key from IGSEND_API_KEYS as Authorization: Bearer KEY",
                      headers=AUTH_CHALLENGE)
            needed = SCOPE_OF.get(request.endpoint or "", OPERATE)
            if not key.allows(needed):
                abort(403, message=f"this key lacks the scope {needed!r}: give it {needed} in IGSEND_API_KEYS "
                                   "(KEY:scope+scope)")
            throttled(key)
        # Routed /v1 calls all need Redis (their group's, with IGSEND_GROUPS): answer 503 at once rather than
        # after the shared client's retries.
        if request.blueprint == blp.name:
            _check_redis()

    def _unavailable(exc: Exception) -> tuple[Any, int]:
        # Redis went away after the guard's check (or the broker refused a publish): the caller may retry.
        log.warning("answering 503: %s: %s", type(exc).__name__, exc)
        return jsonify({"code": 503, "status": "Service Unavailable", "message": FAILED_MIDWAY}), 503

    app.register_error_handler(RedisError, _unavailable)
    app.register_error_handler(BrokerError, _unavailable)
    start_inbox()
    return app
