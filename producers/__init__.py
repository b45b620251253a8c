"""What other apps import to send Instagram Direct messages through igsend, and to poll the outcome.

Every sender validates first (raising :class:`InvalidMessage`, with nothing enqueued) and returns a
:class:`Job`; an idempotency key already bound to a different message raises :class:`IdempotencyConflict`.
igsend's own errors derive from :class:`IgsendError` (``InvalidMessage`` is marshmallow's ValidationError).
Importing this package pulls in no worker code: no Graph client, no sandbox, no Flower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from igsend.core.errors import IdempotencyConflict, IgsendError, ReplayRefused

# enqueue_many: importable from here as before, though send_many no longer uses it
from producers.enqueue import EnqueueError, RedisFull, enqueue, place_many, validate_many
from producers.enqueue import enqueue_many as enqueue_many
from producers.jobs import (
    Job,
    JobCancelled,
    JobError,
    JobNotFound,
    JobStatus,
    MessageDead,
    OutcomeUnknown,
    get_job,
)
from schemas import InvalidMessage

__all__ = [
    "BatchResult", "EnqueueError", "IdempotencyConflict", "IgsendError", "InvalidMessage", "Job", "JobError",
    "JobCancelled", "JobNotFound", "JobStatus", "MessageDead", "OutcomeUnknown", "RedisFull", "ReplayRefused",
    "get_job", "react", "send", "send_attachment", "send_link", "send_many",
    "send_post", "send_sticker", "send_text", "unreact",
]


def send(document: dict[str, Any]) -> Job:
    """Send one message document (the flat JSON shape of DESIGN.md, e.g. ``{"kind": "text", ...}``)."""
    return enqueue(document)


def _send(kind: str, recipient: str, account: str, idempotency_key: str | None, **fields: Any) -> Job:
    document = {"kind": kind, "recipient": recipient, "account": account, **fields}
    if idempotency_key is not None:
        document["idempotency_key"] = idempotency_key
    return enqueue(document)


def send_text(recipient: str, text: str, *, account: str = "default", idempotency_key: str | None = None) -> Job:
    """Text, UTF-8, at most 1000 bytes."""
    return _send("text", recipient, account, idempotency_key, text=text)


def send_link(recipient: str, url: str, *, account: str = "default", idempotency_key: str | None = None) -> Job:
    """A link: text that is a valid http(s) URL."""
    return _send("link", recipient, account, idempotency_key, url=url)


def send_attachment(recipient: str, media_type: str, url: str, *, account: str = "default",
                    idempotency_key: str | None = None) -> Job:
    """An image, gif, video or audio file at a public http(s) URL."""
    return _send(media_type, recipient, account, idempotency_key, url=url)


def send_post(recipient: str, post_id: str, *, account: str = "default",
              idempotency_key: str | None = None) -> Job:
    """A published post the account owns (MEDIA_SHARE)."""
    return _send("post", recipient, account, idempotency_key, post_id=post_id)


def send_sticker(recipient: str, *, account: str = "default", idempotency_key: str | None = None) -> Job:
    """The heart sticker (like_heart)."""
    return _send("sticker", recipient, account, idempotency_key)


def react(recipient: str, message_id: str, reaction: str = "love", *, account: str = "default",
          idempotency_key: str | None = None) -> Job:
    """React to a message the recipient sent ('love', or an emoji for Instagram-Login accounts)."""
    return _send("react", recipient, account, idempotency_key, message_id=message_id, reaction=reaction)


def unreact(recipient: str, message_id: str, *, account: str = "default",
            idempotency_key: str | None = None) -> Job:
    """Remove the reaction from a message."""
    return _send("unreact", recipient, account, idempotency_key, message_id=message_id)


@dataclass
class BatchResult:
    """Per position: ``jobs[i]`` is the Job, or None where ``errors[i]`` says why message i was refused (an
    InvalidMessage, or an IdempotencyConflict when its key already names a different message).

    ``duplicates`` holds the positions whose idempotency key already named a job, made earlier in the same
    batch or before it: ``jobs[i]`` is that job and nothing new was queued for them. So every position is in
    exactly one of ``queued`` (by index: ``new``), ``duplicates``, ``invalid`` and ``conflicts``.
    """

    jobs: list[Job | None] = field(default_factory=list)
    errors: dict[int, InvalidMessage | IdempotencyConflict] = field(default_factory=dict)
    duplicates: set[int] = field(default_factory=set)

    @property
    def new(self) -> list[int]:
        """Positions whose job this call queued."""
        return [i for i, job in enumerate(self.jobs) if job is not None and i not in self.duplicates]

    @property
    def queued(self) -> list[Job]:
        """The jobs this call put on the queue, each once."""
        return [job for i, job in enumerate(self.jobs) if job is not None and i not in self.duplicates]

    @property
    def invalid(self) -> dict[int, InvalidMessage]:
        return {i: e for i, e in self.errors.items() if not isinstance(e, IdempotencyConflict)}

    @property
    def conflicts(self) -> dict[int, IdempotencyConflict]:
        return {i: e for i, e in self.errors.items() if isinstance(e, IdempotencyConflict)}


def send_many(documents: list[dict[str, Any]]) -> BatchResult:
    """Validate a batch of message documents and queue the valid ones in pipelined round trips.

    A key repeated inside the batch queues one job: the same message again is a duplicate of it, a different
    message under the same key is a conflict for that position.
    """
    valid, errors = validate_many(documents)
    placements = iter(place_many(valid))
    result = BatchResult(errors=dict(errors))
    for index in range(len(documents)):
        if index in errors:
            result.jobs.append(None)
            continue
        placed = next(placements)
        if placed.conflict is not None:
            result.jobs.append(None)
            result.errors[index] = placed.conflict
            continue
        result.jobs.append(placed.job)
        if not placed.new:
            result.duplicates.add(index)
    return result
