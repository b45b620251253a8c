"""Dead letters: GET /v1/dead-letters and POST /v1/dead-letters/{id}/replay (nested in the /v1 blueprint)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from igsend.core import routing
from igsend.core.errors import ReplayRefused
from producers.api.auth import scope
from producers.api.errors import common_errors, fails
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
from producers.api_keys import OPERATE

#: Nested in the /v1 blueprint (producers.api): its routes are under /v1 and documented under its tag, messages.
dead_letters = Blueprint("dead_letters", __name__)


class DeadLetterSchema(JobSchema):
    status = fields.String(allow_none=True)
    message = fields.Raw(allow_none=True, metadata=STORED_MESSAGE)
    reason = fields.String(allow_none=True)
    error = fields.Raw(metadata=LAST_ERROR)
    attempts = fields.List(fields.Nested(AttemptSchema), metadata={"description": "every attempt, oldest first"})
    dead_at = fields.Float()


class DeadLetterQuerySchema(Schema):
    account = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10_000))


@dead_letters.route("/dead-letters", methods=["GET"])
@dead_letters.doc(operationId="listDeadLetters",
                  responses={200: {"links": links("/0/id", "replayDeadLetter", "getMessage")}})
@dead_letters.arguments(DeadLetterQuerySchema, location="query")
@dead_letters.response(200, DeadLetterSchema(many=True))
@common_errors(dead_letters)
@scope(dead_letters, OPERATE)
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


@dead_letters.route("/dead-letters/<job_id>/replay", methods=["POST"])
@dead_letters.doc(operationId="replayDeadLetter", responses={202: {"links": links("/id", "getMessage")}})
@dead_letters.response(202, JobIdSchema, description="queued again under its job id; poll the Location",
                       headers=LOCATION)
@fails(dead_letters, 404, "no such dead letter")
@fails(dead_letters, 409, "the job is not dead now (e.g. it was delivered): a replay could send it twice")
@common_errors(dead_letters)
@scope(dead_letters, OPERATE)
def replay_dead_letter(job_id: str) -> tuple[dict[str, str], int, dict[str, str]]:
    """Send a dead message again under its job id."""
    from igsend.core import dlq

    try:
        with routing.for_job(checked_id(job_id)):
            replayed = dlq.replay(job_id)
    except ReplayRefused as exc:
        abort(409, message=str(exc))
    if not replayed:
        abort(404, message=f"no dead-letter entry {job_id}")
    return {"id": job_id}, 202, {"Location": f"/v1/messages/{job_id}"}
