"""Jobs as the API shows them: a job id's form, and the schemas messages and dead letters share."""

from __future__ import annotations

import re
from typing import Any

from flask_smorest import abort
from marshmallow import Schema, fields

from producers.api.openapi import ref

JOB_ID = re.compile(r"[!-~]{1,255}")  # what a Celery task id can be in practice: printable ASCII, no spaces

#: The Location header of a 202: where to poll.
LOCATION = {"Location": {"description": "/v1/messages/{id}: poll it for the outcome", "required": True,
                         "schema": {"type": "string"}}}
#: What a job was asked to send: a Message document, kept as received when a raw Celery body broke a rule.
STORED_MESSAGE = {"type": "object", "description": "the message document (see Message); a raw Celery body that "
                                                   "broke a rule is kept as it was received"}
#: The last error (an ErrorDetail), or null. Not allow_none=True: apispec documents that as "ErrorDetail or any
#: object", which generators turn into an untyped class.
LAST_ERROR = {"allOf": [ref("ErrorDetail")], "nullable": True, "description": "the last error, if any"}


def links(where: str, *operations: str) -> dict[str, Any]:
    """OpenAPI links from an answer naming a job id at ``where`` (a JSON pointer into the body) to ``operations``
    (their operationIds), each taking it as ``job_id``: what a client, or Schemathesis's stateful phase, does next."""
    return {operation: {"operationId": operation, "parameters": {"job_id": f"$response.body#{where}"},
                        "description": "the job this answer names"} for operation in operations}


def checked_id(job_id: str) -> str:
    """``job_id``, or 404 when it cannot be a job's id."""
    if not JOB_ID.fullmatch(job_id):
        abort(404, message="no such job: a job id is 1-255 printable ASCII characters")
    return job_id


class JobIdSchema(Schema):
    id = fields.String(required=True, metadata={"description": "the job id: poll GET /v1/messages/{id}"})


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


class JobSchema(Schema):
    """What every answer about one job begins with: the job, and what it sends from which account to whom (null
    where a raw Celery body did not say). A base only: the API answers with its Status and DeadLetter forms."""

    id = fields.String(required=True)
    kind = fields.String(allow_none=True)
    account = fields.String(allow_none=True)
    recipient = fields.String(allow_none=True)
