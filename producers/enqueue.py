"""Validate messages and put them on the queue: a job record first, then the Celery message."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from producers.celery_app import NEW_PRIORITY, get_app, publish
from producers.jobs import Job
from producers.settings import get_settings
from producers.store import get_redis, idempotency_key, job_key
from schemas import InvalidMessage, load_message

# Creates the job record, or returns the job that already owns the idempotency key: one atomic step, so two
# concurrent calls with the same key cannot both create a job.
_CREATE_JOB = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing == ARGV[1] then return {1, existing} end  -- this very call, replayed after a timeout
  if existing then return {0, existing} end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[1]}
"""


class EnqueueError(RuntimeError):
    """The broker did not take the message(s): none of the call's job ids is valid; sending again is safe."""


def _record_fields(job_id: str, message: dict[str, Any], key: str | None, now: float) -> list[Any]:
    fields = {
        "id": job_id, "status": "queued", "kind": message["kind"], "account": message["account"],
        "recipient": message["recipient"], "message": json.dumps(message, ensure_ascii=False),
        "attempts": 0, "created_at": now, "updated_at": now, "idempotency_key": key or "",
    }
    return [item for pair in fields.items() for item in pair]


def enqueue(document: dict[str, Any]) -> Job:
    """Validate one message document and queue it. Raises InvalidMessage (nothing queued) or EnqueueError."""
    return enqueue_many([load_message(document)])[0]


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


def enqueue_many(messages: list[dict[str, Any]]) -> list[Job]:
    """Queue already-validated messages in pipelined round trips: the job records (one Lua call each, so an
    idempotency key is claimed atomically) in one pipeline, then the Celery messages in one kombu publish
    batch. If the broker fails, nothing of the call counts as queued and EnqueueError is raised."""
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
            script(keys=[job_key(job_id), idem],
                   args=[job_id, settings.result_ttl, settings.idempotency_window,
                         *_record_fields(job_id, message, key, now)], client=pipe)
            planned.append((message, idem))
        outcomes = pipe.execute()
    except RedisError as exc:
        raise EnqueueError(f"could not record the messages: {type(exc).__name__}: {exc}") from exc
    fresh = [(message, idem, job_id) for (message, idem), (created, job_id) in zip(planned, outcomes, strict=True)
             if created]
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
    return [Job(job_id) for _, job_id in outcomes]
