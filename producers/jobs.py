"""The Job handle a caller keeps: id, status, result(timeout=...), info() — read from the job record."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

from producers.errors import IgsendError
from producers.store import attempts_key, decode_record, get_redis, job_key


class JobStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    DELIVERED = "delivered"  # accepted by Meta with a message id (Instagram has no delivery receipts)
    DEAD = "dead"
    UNKNOWN = "unknown"  # the POST went out and its answer was lost; see README "Delivery guarantees"
    NOT_FOUND = "not_found"  # no record: a wrong id, or expired after IGSEND_RESULT_TTL

    @property
    def final(self) -> bool:
        return self in (JobStatus.DELIVERED, JobStatus.DEAD, JobStatus.UNKNOWN)


class JobError(IgsendError):
    """A job ended without delivery; ``info`` is its status record (no secrets in it)."""

    def __init__(self, job_id: str, info: dict[str, Any]):
        self.job_id = job_id
        self.info = info
        error = info.get("error") or {}
        detail = info.get("reason") or "no reason recorded"
        if error.get("code") is not None:
            code = f"{error['code']}/{error['subcode']}" if error.get("subcode") is not None else str(error["code"])
            detail += f" (Graph error {code}: {error.get('message')})"
        super().__init__(f"job {job_id} is {info.get('status')}: {detail}")


class MessageDead(JobError):
    """The message was dead-lettered (see ``igsend dlq show ID``)."""


class OutcomeUnknown(JobError):
    """The POST may have reached Meta but its answer was lost; igsend did not resend it."""


class JobNotFound(IgsendError, LookupError):
    pass


class Job:
    """A handle on one message. Cheap to create: nothing is read until you ask."""

    __slots__ = ("id",)

    def __init__(self, job_id: str):
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def info(self) -> dict[str, Any]:
        """The status record: id, status, kind, account, recipient, attempts, timestamps, result or error,
        and ``attempt_log`` (one entry per POST: time, HTTP status, Graph code/subcode, message, fbtrace_id)."""
        pipe = get_redis().pipeline(transaction=False)
        pipe.hgetall(job_key(self.id))
        pipe.lrange(attempts_key(self.id), 0, -1)
        raw, attempts = pipe.execute()
        record = decode_record(raw)
        if not record:
            return {"id": self.id, "status": JobStatus.NOT_FOUND.value}
        record["attempt_log"] = [json.loads(a) for a in attempts]
        return record

    def status(self) -> JobStatus:
        value = get_redis().hget(job_key(self.id), "status")
        if not value or value == "cancelled":  # cancelled: its publish failed and the caller was told so
            return JobStatus.NOT_FOUND
        return JobStatus(value)

    def result(self, timeout: float | None = 30.0, *, poll: float = 0.05) -> dict[str, Any]:
        """Wait for the job to finish and return Meta's answer (``recipient_id``, ``message_id``).

        Raises :class:`MessageDead` or :class:`OutcomeUnknown` when it did not deliver, :class:`JobNotFound`
        for an id with no record, and :class:`TimeoutError` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            status = self.status()
            if status is JobStatus.DELIVERED:
                return self.info()["result"]
            if status is JobStatus.DEAD:
                raise MessageDead(self.id, self.info())
            if status is JobStatus.UNKNOWN:
                raise OutcomeUnknown(self.id, self.info())
            if status is JobStatus.NOT_FOUND:
                raise JobNotFound(f"no job {self.id} (wrong id, or expired)")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} still {status.value} after {timeout} s")
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)


def get_job(job_id: str) -> Job:
    """The handle of an existing job, e.g. in another process. Raises :class:`JobNotFound` if unknown."""
    job = Job(job_id)
    if not get_redis().exists(job_key(job_id)):
        raise JobNotFound(f"no job {job_id} (wrong id, or expired)")
    return job
