"""Validate messages and put them on the queue: a job record first, then the Celery message."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from producers.celery_app import NEW_PRIORITY, get_app, publish
from producers.errors import IdempotencyConflict, IgsendError
from producers.jobs import Job
from producers.settings import get_settings
from producers.store import PENDING_KEY, get_redis, idempotency_key, job_key
from schemas import InvalidMessage, load_message

# Creates the job record, or answers with the job that already owns the idempotency key: one atomic step, so two
# concurrent calls with the same key cannot both create a job. The key's value is "JOB_ID|FINGERPRINT": the
# fingerprint of the message that claimed it, so a later call with the same key but another message is refused
# (as Stripe does) instead of silently answering with a job that sends something else.
# Returns {1, id} created, {0, id} the same message already has this job, {-1, id} the key names another message.
_CREATE_JOB = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local owner, fingerprint = string.match(existing, '^(.-)|(%x+)$')
    if not owner then owner = existing end  -- claimed before fingerprints were stored: nothing to compare
    if owner == ARGV[1] then return {1, owner} end  -- this very call, replayed after a timeout
    if fingerprint and fingerprint ~= ARGV[4] then return {-1, owner} end
    return {0, owner}
  end
  redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[4], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])  -- for the lost-message sweep
return {1, ARGV[1]}
"""

CREATED, DUPLICATE, CONFLICT = 1, 0, -1


class EnqueueError(IgsendError, RuntimeError):
    """The broker did not take the message(s): none of the call's job ids is valid; sending again is safe."""


def _record_fields(job_id: str, message: dict[str, Any], key: str | None, now: float) -> list[Any]:
    fields = {
        "id": job_id, "status": "queued", "kind": message["kind"], "account": message["account"],
        "recipient": message["recipient"], "message": json.dumps(message, ensure_ascii=False),
        "attempts": 0, "created_at": now, "updated_at": now, "idempotency_key": key or "",
    }
    return [item for pair in fields.items() for item in pair]


def enqueue(document: dict[str, Any]) -> Job:
    """Validate one message document and queue it. Raises InvalidMessage (nothing queued), IdempotencyConflict
    (its key already names a different message; nothing queued) or EnqueueError."""
    placed = place_many([load_message(document)])[0]
    if placed.conflict is not None:
        raise placed.conflict
    return placed.job


def validate_many(documents: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[int, InvalidMessage]]:
    """Validate a batch; return the valid messages and, by position, the errors of the others."""
    valid: list[dict[str, Any]] = []
    errors: dict[int, InvalidMessage] = {}
    for index, document in enumerate(documents):
        try:
            valid.append(load_message(document))
        except InvalidMessage as exc:
            errors[index] = exc
    return valid, errors


def _argsrepr(message: dict[str, Any]) -> str:
    """What logs and Flower show as the task's arguments: who, to whom, what kind (Celery's generic
    saferepr of the whole document costs more than the rest of the publish)."""
    return repr([{key: message.get(key) for key in ("kind", "recipient", "account")}])


def _abandon(redis: Any, job_ids: list[str]) -> None:
    """Mark records whose publish failed as cancelled: should the message reach a worker after all, the
    worker refuses it (the caller was told it failed and may send it again)."""
    with contextlib.suppress(RedisError):
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hset(job_key(job_id), mapping={"status": "cancelled", "reason": "publish failed"})
        pipe.execute()


def fingerprint(message: dict[str, Any]) -> str:
    """The sha256 of a validated message in canonical JSON (sorted keys, no idempotency key): what an idempotency
    key is bound to, so that "the same message" means the same fields after defaults are filled in."""
    canonical = {key: value for key, value in message.items() if key != "idempotency_key"}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Placement:
    """What became of one message of a call: queued by this call (``new``), answered with the job its
    idempotency key already named (not ``new``; nothing queued), or refused (``conflict``: the key names a
    different message)."""

    job: Job
    new: bool
    conflict: IdempotencyConflict | None = None


def enqueue_many(messages: list[dict[str, Any]]) -> list[Job]:
    """Queue already-validated messages; return each one's job (the existing one where an idempotency key
    already named it). Raises IdempotencyConflict for the first message whose key names a different message,
    after the others were queued: use :func:`place_many` (or ``send_many``) for per-message answers."""
    placements = place_many(messages)
    for placed in placements:
        if placed.conflict is not None:
            raise placed.conflict
    return [placed.job for placed in placements]


def place_many(messages: list[dict[str, Any]]) -> list[Placement]:
    """Queue already-validated messages in pipelined round trips: the job records (one Lua call each, so an
    idempotency key is claimed atomically) in one pipeline, then the Celery messages in one kombu publish
    batch. A key repeated inside the call queues one job: the pipeline runs the calls in order, so the later
    ones find the key claimed. If the broker fails, nothing of the call counts as queued and EnqueueError is
    raised."""
    settings = get_settings()
    redis = get_redis()
    script = redis.register_script(_CREATE_JOB)
    now = time.time()
    planned = []
    try:
        pipe = redis.pipeline(transaction=False)
        for message in messages:
            message = dict(message)
            key = message.pop("idempotency_key", None)
            job_id = str(uuid.uuid4())
            idem = idempotency_key(message["account"], key) if key else ""
            script(keys=[job_key(job_id), idem, PENDING_KEY],
                   args=[job_id, settings.result_ttl, settings.idempotency_window, fingerprint(message),
                         *_record_fields(job_id, message, key, now)], client=pipe)
            planned.append((message, idem, key))
        outcomes = pipe.execute()
    except RedisError as exc:
        raise EnqueueError(f"could not record the messages: {type(exc).__name__}: {exc}") from exc
    fresh = [(message, idem, job_id) for (message, idem, _), (outcome, job_id) in zip(planned, outcomes, strict=True)
             if outcome == CREATED]
    app = get_app()
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for message, _, job_id in fresh:
                publish(app, producer, job_id, message, priority=NEW_PRIORITY, argsrepr=_argsrepr(message))
    except Exception as exc:
        _abandon(redis, [job_id for _, _, job_id in fresh])
        with contextlib.suppress(RedisError):
            idems = [idem for _, idem, _ in fresh if idem]
            if idems:
                redis.delete(*idems)
        raise EnqueueError(f"could not queue {len(fresh)} message(s): {type(exc).__name__}: {exc}") from exc
    return [Placement(Job(job_id), outcome == CREATED,
                      IdempotencyConflict(key, job_id) if outcome == CONFLICT else None)
            for (_, _, key), (outcome, job_id) in zip(planned, outcomes, strict=True)]
