"""The Job handle a caller keeps: id, status, result(timeout=...), info() — read from the job record."""

from __future__ import annotations

import time
from typing import Any, cast

from igsend.core import records
from igsend.core.errors import IgsendError
from igsend.core.records import JobStatus as JobStatus
from igsend.core.store import get_redis


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


class JobCancelled(JobError):
    """The job was cancelled (e.g. revoked in Flower) before it was sent."""


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
        return records.read(get_redis(), self.id) or {"id": self.id, "status": JobStatus.NOT_FOUND.value}

    def status(self) -> JobStatus:
        return records.status_of(get_redis(), self.id)

    def wait(self, timeout: float | None = 30.0, *, poll: float = 0.05) -> JobStatus:
        """Poll until the job is final (or has no record); return its status. Raises :class:`TimeoutError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            status = self.status()
            if status.final or status is JobStatus.NOT_FOUND:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} still {status.value} after {timeout} s")
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    def result(self, timeout: float | None = 30.0, *, poll: float = 0.05) -> dict[str, Any]:
        """Wait for the job to finish and return Meta's answer (``recipient_id``, ``message_id``).

        Raises :class:`MessageDead`, :class:`OutcomeUnknown` or :class:`JobCancelled` when it did not deliver,
        :class:`JobNotFound` for an id with no record, and :class:`TimeoutError` when ``timeout`` seconds pass.
        """
        status = self.wait(timeout, poll=poll)
        if status is JobStatus.NOT_FOUND:
            raise JobNotFound(f"no job {self.id} (wrong id, or expired)")
        info = self.info()
        if status is JobStatus.DELIVERED:
            return cast(dict[str, Any], info["result"])
        failure = {JobStatus.DEAD: MessageDead, JobStatus.UNKNOWN: OutcomeUnknown}.get(status, JobCancelled)
        raise failure(self.id, info)


def get_job(job_id: str) -> Job:
    """The handle of an existing job, e.g. in another process. Raises :class:`JobNotFound` if unknown."""
    job = Job(job_id)
    if not records.exists(get_redis(), job_id):
        raise JobNotFound(f"no job {job_id} (wrong id, or expired)")
    return job
