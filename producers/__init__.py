"""What other apps import to send Instagram Direct messages through igsend, and to poll the outcome.

Every sender validates first (raising :class:`InvalidMessage`, with nothing enqueued) and returns a
:class:`Job`. Importing this package pulls in no worker code: no Graph client, no sandbox, no Flower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from producers.enqueue import EnqueueError, enqueue, enqueue_many, validate_many
from producers.jobs import Job, JobError, JobNotFound, JobStatus, MessageDead, OutcomeUnknown, get_job
from schemas import InvalidMessage

__all__ = [
    "BatchResult", "EnqueueError", "InvalidMessage", "Job", "JobError", "JobNotFound", "JobStatus",
    "MessageDead", "OutcomeUnknown", "get_job", "react", "send", "send_attachment", "send_link", "send_many",
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
    """Per position: ``jobs[i]`` is the Job, or None where ``errors[i]`` says why message i was refused."""

    jobs: list[Job | None] = field(default_factory=list)
    errors: dict[int, InvalidMessage] = field(default_factory=dict)

    @property
    def queued(self) -> list[Job]:
        return [job for job in self.jobs if job is not None]


def send_many(documents: list[dict[str, Any]]) -> BatchResult:
    """Validate a batch of message documents and queue the valid ones in pipelined round trips."""
    valid, errors = validate_many(documents)
    queued = iter(enqueue_many(valid))
    return BatchResult(jobs=[None if i in errors else next(queued) for i in range(len(documents))], errors=errors)
