"""Validate messages and put them on the queue: a job record first, then the Celery message."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from producers.celery_app import NEW_PRIORITY, QUEUE, TASK_NAME, get_app
from producers.jobs import Job
from producers.settings import get_settings
from producers.store import get_redis, idempotency_key, job_key
from schemas import InvalidMessage, load_message

# Creates the job record, or returns the job that already owns the idempotency key: one atomic step, so two
# concurrent calls with the same key cannot both create a job.
_CREATE_JOB = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {0, existing} end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[1]}
"""


class EnqueueError(RuntimeError):
    """The broker did not take the message(s). ``queued`` lists the jobs of a batch that did get queued
    before the failure; every other message of the call was not queued and has no valid job id."""

    def __init__(self, message: str, queued: list[Job] | None = None):
        super().__init__(message)
        self.queued = queued or []


def _record_fields(job_id: str, message: dict[str, Any], key: str | None, now: float) -> list[Any]:
    fields = {
        "id": job_id, "status": "queued", "kind": message["kind"], "account": message["account"],
        "recipient": message["recipient"], "message": json.dumps(message, ensure_ascii=False),
        "attempts": 0, "created_at": now, "updated_at": now, "idempotency_key": key or "",
    }
    return [item for pair in fields.items() for item in pair]


def enqueue(document: dict[str, Any]) -> Job:
    """Validate one message document and queue it. Raises InvalidMessage (nothing queued) or EnqueueError."""
    message = load_message(document)
    key = message.pop("idempotency_key", None)
    settings = get_settings()
    redis = get_redis()
    job_id = str(uuid.uuid4())
    idem = idempotency_key(message["account"], key) if key else ""
    try:
        created, job_id = redis.eval(
            _CREATE_JOB, 2, job_key(job_id), idem, job_id, settings.result_ttl, settings.idempotency_window,
            *_record_fields(job_id, message, key, time.time()),
        )
    except RedisError as exc:
        raise EnqueueError(f"could not record the message: {type(exc).__name__}: {exc}") from exc
    if not created:
        return Job(job_id)
    try:
        get_app().send_task(TASK_NAME, args=[message], task_id=job_id, queue=QUEUE, priority=NEW_PRIORITY)
    except Exception as exc:
        # Undo the record so the id (and the idempotency key) do not point at a message that is not queued.
        with contextlib.suppress(RedisError):
            redis.delete(job_key(job_id), *([idem] if idem else []))
        raise EnqueueError(f"could not queue the message: {type(exc).__name__}: {exc}") from exc
    return Job(job_id)


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


def enqueue_many(messages: list[dict[str, Any]]) -> list[Job]:
    """Queue already-validated messages: records in one pipelined round trip, then one publish each over a
    single broker connection. If the broker fails part-way, the records of the messages not published are
    removed and EnqueueError says which jobs did get queued."""
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
    app = get_app()
    jobs: list[Job] = []
    try:
        with app.producer_or_acquire() as producer:
            for (message, _), (created, job_id) in zip(planned, outcomes, strict=True):
                if created:
                    app.send_task(TASK_NAME, args=[message], task_id=job_id, queue=QUEUE, producer=producer,
                                  priority=NEW_PRIORITY)
                jobs.append(Job(job_id))
    except Exception as exc:
        unpublished = [(planned[i][1], outcomes[i]) for i in range(len(jobs), len(planned)) if outcomes[i][0]]
        with contextlib.suppress(RedisError):
            keys = [k for idem, (_, job_id) in unpublished for k in (job_key(job_id), idem) if k]
            if keys:
                redis.delete(*keys)
        raise EnqueueError(f"queued {len(jobs)} of {len(planned)} messages, then: {type(exc).__name__}: {exc}",
                           queued=jobs) from exc
    return jobs
