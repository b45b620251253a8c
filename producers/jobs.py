"""The Job handle a caller keeps: id, status, result(timeout=...), info() — read from the job record."""

from __future__ import annotations

from typing import Any, cast

from igsend.core import records, routing, waiting
from igsend.core.celery_app import in_broker
from igsend.core.errors import IgsendError
from igsend.core.records import JobStatus as JobStatus
from igsend.core.settings import get_settings
from igsend.core.store import get_redis

#: Seconds an id must read ``not_found`` before :meth:`Job.wait` believes it.
NOT_FOUND_GRACE = 0.5


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
        with routing.for_job(self.id):  # the group its id names (IGSEND_GROUPS); the process's Redis without
            client = get_redis()
            record = records.read(client, self.id)
            if record:
                return record
            return {"id": self.id, "status": _without_record(client, self.id).value, "attempts": 0}

    def status(self) -> JobStatus:
        with routing.for_job(self.id):
            client = get_redis()
            status = records.status_of(client, self.id)
            return _without_record(client, self.id) if status is JobStatus.NOT_FOUND else status

    def wait(self, timeout: float | None = 30.0, *, poll: float | None = None) -> JobStatus:
        """Wait until the job is final (or has no record); return its status. Raises :class:`TimeoutError`.

        It does not poll: the status is read once, then again only when the outcome stream names this job
        (``igsend/core/waiting.py``: one thread per process and Redis reads the stream for every waiter), so it
        returns as soon as the job ends. ``poll`` is accepted for compatibility and ignored.

        ``not_found`` counts only once it has lasted ``NOT_FOUND_GRACE`` seconds (or the timeout, if shorter): a
        worker takes a raw job's message off the queue and files it as unacknowledged in two steps, and in between
        it is nowhere to be seen."""
        del poll  # accepted for compatibility: nothing polls any more
        with routing.for_job(self.id):  # the reader of the group's Redis (IGSEND_GROUPS)
            status = waiting.wait_for(self.id, self.status, timeout, not_found_grace=NOT_FOUND_GRACE)
        if status.final or status is JobStatus.NOT_FOUND:
            return status
        raise TimeoutError(f"job {self.id} still {status.value} after {timeout} s")

    def result(self, timeout: float | None = 30.0, *, poll: float | None = None) -> dict[str, Any]:
        """Wait for the job to finish and return Meta's answer (``recipient_id``, ``message_id``). Wakes when the
        job ends, without polling (see :meth:`wait`; ``poll`` is accepted for compatibility and ignored).

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


    def cancel(self, reason: str = "cancelled by the caller") -> None:
        """Take the message back before it is sent: a ``queued``, ``scheduled`` or ``retrying`` job ends
        ``cancelled`` and is never POSTed, even from a copy already in a worker's prefetch. Raises
        :class:`CancelRefused` (with the reason) for a job that is sending or finished, :class:`JobNotFound` for an
        unknown id."""
        with routing.for_job(self.id):
            client = get_redis()
            ttl = get_settings().result_ttl
            try:
                records.cancel(client, self.id, reason=reason, record_ttl=ttl)
            except LookupError:
                if not in_broker(client, self.id):
                    raise JobNotFound(f"no job {self.id} (wrong id, or expired)") from None
                # a raw client's message no worker took yet: its record is made cancelled, so no worker sends it
                records.cancel(client, self.id, reason=reason, record_ttl=ttl, create=True)


def _without_record(client: Any, job_id: str) -> JobStatus:
    """A job another Celery client published has no record until a worker takes it: ``queued`` while its
    message is in the broker, else ``not_found``. Only asked when there is no record."""
    return JobStatus.QUEUED if in_broker(client, job_id) else JobStatus.NOT_FOUND


def get_job(job_id: str) -> Job:
    """The handle of an existing job, e.g. in another process. Raises :class:`JobNotFound` if unknown."""
    job = Job(job_id)
    with routing.for_job(job_id):
        client = get_redis()
        if not records.exists(client, job_id) and not in_broker(client, job_id):
            raise JobNotFound(f"no job {job_id} (wrong id, or expired)")
    return job


def statuses(job_ids: list[str]) -> list[JobStatus]:
    """Each job's status by position, one round trip per group (records only: an id without a record reads
    ``not_found``)."""
    found: dict[int, JobStatus] = {}
    by_group: dict[str | None, list[int]] = {}
    for index, job_id in enumerate(job_ids):
        group = routing.group_of_job(job_id)
        by_group.setdefault(group.name if group else None, []).append(index)
    for name, indexes in by_group.items():
        with routing.in_group(routing.groups().get(name) if name else None):
            read = records.statuses(get_redis(), [job_ids[index] for index in indexes])
        found.update(zip(indexes, read, strict=True))
    return [found[index] for index in range(len(job_ids))]
