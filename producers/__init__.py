"""What other apps import to send Instagram Direct messages through igsend, and to poll the outcome.

Every sender validates first (raising :class:`InvalidMessage`, with nothing enqueued) and returns a
:class:`Job`; an idempotency key already bound to a different message raises :class:`IdempotencyConflict`.
igsend's own errors derive from :class:`IgsendError` (``InvalidMessage`` is marshmallow's ValidationError).
Importing this package pulls in no worker code: no Graph client, no sandbox, no Flower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from igsend.core.errors import (
    CancelRefused,
    IdempotencyConflict,
    IgsendError,
    OutsideWindow,
    ReplayRefused,
    UnknownAccount,
)
from producers import uploads

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
    "BatchResult", "CancelRefused", "EnqueueError", "IdempotencyConflict", "IgsendError", "InvalidMessage", "Job",
    "JobError", "JobCancelled", "JobNotFound", "JobStatus", "MessageDead", "OutcomeUnknown", "OutsideWindow",
    "RedisFull", "ReplayRefused", "UnknownAccount",
    "get_job", "media_item", "react", "reply_privately", "send", "send_attachment", "send_button_template",
    "send_generic_template", "send_images", "send_link", "send_many", "send_post", "send_product_template",
    "send_quick_replies", "send_sticker", "send_text", "sender_action", "unreact",
]


def send(document: dict[str, Any]) -> Job:
    """Send one message document (the flat JSON shape of DESIGN.md, e.g. ``{"kind": "text", ...}``)."""
    return enqueue(document)


#: When to send: an aware datetime, or Unix seconds.
When = datetime | float | int


def _seconds(send_at: When) -> float | int:
    """``send_at`` as the document carries it; a naive datetime is refused (whose 9:00?)."""
    if not isinstance(send_at, datetime):
        return send_at
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise InvalidMessage({"send_at": ["must be an aware datetime (with a tzinfo, e.g. "
                                          "datetime(2026, 12, 1, 9, tzinfo=ZoneInfo('Europe/Paris')))"]})
    return send_at.timestamp()


def _send(kind: str, recipient: str, account: str, idempotency_key: str | None, **fields: Any) -> Job:
    if fields.get("send_at") is not None:
        fields["send_at"] = _seconds(fields["send_at"])
    document = {"kind": kind, "recipient": recipient, "account": account,
                **{name: value for name, value in fields.items() if value is not None}}
    if idempotency_key is not None:
        document["idempotency_key"] = idempotency_key
    return enqueue(document)


def send_text(recipient: str, text: str, *, account: str = "default", idempotency_key: str | None = None,
              tag: str | None = None, reply_to: str | None = None,
              send_at: When | None = None, ordered: bool | None = None,
              priority: str | None = None) -> Job:
    """Text, UTF-8, at most 1000 bytes.

    Every sender of a message also takes ``tag="HUMAN_AGENT"`` (a person's reply within 7 days of the user's
    message; needs Meta's Human Agent permission) and ``reply_to=MESSAGE_ID`` (quote a message of the
    conversation); every sender takes ``send_at=`` an aware datetime or Unix seconds (the job is ``scheduled``
    until then, at most a year ahead) and ``ordered=True`` (POSTed only after the account's earlier ordered
    messages to this recipient are done with; the default comes from the account's ``ordered`` setting) and
    ``priority="bulk"`` (a campaign: the account's ``normal`` messages, the default, are handed to the workers
    first; igsend.core.lanes)."""
    return _send("text", recipient, account, idempotency_key, text=text, tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_link(recipient: str, url: str, *, account: str = "default", idempotency_key: str | None = None,
              tag: str | None = None, reply_to: str | None = None,
              send_at: When | None = None, ordered: bool | None = None,
              priority: str | None = None) -> Job:
    """A link: text that is a valid http(s) URL."""
    return _send("link", recipient, account, idempotency_key, url=url, tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


#: What a media sender takes: a public URL, ``{"attachment_id": ID}``, a local file's path, or its bytes.
Source = str | Path | bytes | dict[str, str]


def media_item(kind: str, source: Source, *, account: str = "default") -> dict[str, str]:
    """The document's media fields for ``source``: ``{"url"}`` for an http(s) URL, the dict as given, or for a
    local file (a path or bytes) ``{"upload": sha256}`` (staged for the worker to upload once) or
    ``{"attachment_id"}`` (Meta has these bytes already). See :mod:`producers.uploads`."""
    if isinstance(source, dict):
        return dict(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return {"url": source}
    return uploads.stage(kind, source, account=account)


def send_attachment(recipient: str, media_type: str, source: Source, *, account: str = "default",
                    idempotency_key: str | None = None, tag: str | None = None, reply_to: str | None = None,
                    send_at: When | None = None, ordered: bool | None = None,
                    priority: str | None = None) -> Job:
    """An image, gif, video, audio file or PDF (``file``): at a public http(s) URL, ``{"attachment_id": ID}``, or
    a local file (a path or bytes: checked by content and size, uploaded once per account and content, Facebook
    Login accounts only)."""
    return _send(media_type, recipient, account, idempotency_key, **media_item(media_type, source, account=account),
                 tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_images(recipient: str, images: list[Source], *, account: str = "default",
                idempotency_key: str | None = None, tag: str | None = None, reply_to: str | None = None,
                send_at: When | None = None, ordered: bool | None = None,
                priority: str | None = None) -> Job:
    """1-10 images in one message, each a URL, ``{"attachment_id": ID}``, a local file or bytes."""
    items = [media_item("image", image, account=account) for image in images] if isinstance(images, list) \
        else images
    return _send("images", recipient, account, idempotency_key, images=items, tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_post(recipient: str, post_id: str, *, account: str = "default", idempotency_key: str | None = None,
              tag: str | None = None, reply_to: str | None = None,
              send_at: When | None = None, ordered: bool | None = None,
              priority: str | None = None) -> Job:
    """A published post the account owns (MEDIA_SHARE)."""
    return _send("post", recipient, account, idempotency_key, post_id=post_id, tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_sticker(recipient: str, *, account: str = "default", idempotency_key: str | None = None,
                 tag: str | None = None, reply_to: str | None = None,
                 send_at: When | None = None, ordered: bool | None = None,
                 priority: str | None = None) -> Job:
    """The heart sticker (like_heart)."""
    return _send("sticker", recipient, account, idempotency_key, tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_quick_replies(recipient: str, text: str, options: list[dict[str, str] | tuple[str, str]], *,
                       account: str = "default", idempotency_key: str | None = None, tag: str | None = None,
                       reply_to: str | None = None, send_at: When | None = None, ordered: bool | None = None,
                       priority: str | None = None) -> Job:
    """Text with 1-13 options under it; each option ``(title, payload)`` or Meta's
    ``{"content_type": "text", "title": ..., "payload": ...}``. Titles are at most 20 characters."""
    quick_replies = [{"content_type": "text", "title": option[0], "payload": option[1]}
                     if isinstance(option, tuple) else option for option in options] \
        if isinstance(options, list) else options
    return _send("quick_replies", recipient, account, idempotency_key, text=text, quick_replies=quick_replies,
                 tag=tag, reply_to=reply_to,
                 send_at=send_at, ordered=ordered, priority=priority)


def send_generic_template(recipient: str, elements: list[dict[str, Any]], *, account: str = "default",
                          idempotency_key: str | None = None, tag: str | None = None,
                          reply_to: str | None = None, send_at: When | None = None, ordered: bool | None = None,
                          priority: str | None = None) -> Job:
    """1-10 cards (``title`` and at least one of ``subtitle``, ``image_url``, ``default_action``, ``buttons``)."""
    return _send("generic_template", recipient, account, idempotency_key, elements=elements, tag=tag,
                 reply_to=reply_to, send_at=send_at, ordered=ordered, priority=priority)


def send_button_template(recipient: str, text: str, buttons: list[dict[str, str]], *, account: str = "default",
                         idempotency_key: str | None = None, tag: str | None = None,
                         reply_to: str | None = None, send_at: When | None = None, ordered: bool | None = None,
                         priority: str | None = None) -> Job:
    """Text (at most 640 characters) with 1-3 ``web_url`` or ``postback`` buttons."""
    return _send("button_template", recipient, account, idempotency_key, text=text, buttons=buttons, tag=tag,
                 reply_to=reply_to, send_at=send_at, ordered=ordered, priority=priority)


def send_product_template(recipient: str, product_ids: list[str], *, account: str = "default",
                          idempotency_key: str | None = None, tag: str | None = None,
                          reply_to: str | None = None, send_at: When | None = None, ordered: bool | None = None,
                          priority: str | None = None) -> Job:
    """1-10 products of the account's catalog. Facebook-Login accounts only: refused for Instagram-Login ones."""
    return _send("product_template", recipient, account, idempotency_key, product_ids=product_ids, tag=tag,
                 reply_to=reply_to, send_at=send_at, ordered=ordered, priority=priority)


def react(recipient: str, message_id: str, reaction: str = "love", *, account: str = "default",
          idempotency_key: str | None = None, send_at: When | None = None, ordered: bool | None = None,
          priority: str | None = None) -> Job:
    """React to a message the recipient sent ('love', or an emoji for Instagram-Login accounts)."""
    return _send("react", recipient, account, idempotency_key, message_id=message_id, reaction=reaction,
                 send_at=send_at, ordered=ordered, priority=priority)


def unreact(recipient: str, message_id: str, *, account: str = "default",
            idempotency_key: str | None = None, send_at: When | None = None, ordered: bool | None = None,
            priority: str | None = None) -> Job:
    """Remove the reaction from a message."""
    return _send("unreact", recipient, account, idempotency_key, message_id=message_id, send_at=send_at,
                 ordered=ordered, priority=priority)


def sender_action(recipient: str, action: str, *, account: str = "default",
                  idempotency_key: str | None = None, send_at: When | None = None, ordered: bool | None = None,
                  priority: str | None = None) -> Job:
    """``typing_on``, ``typing_off`` or ``mark_seen``: a request of its own, with no message."""
    return _send(action, recipient, account, idempotency_key, send_at=send_at, ordered=ordered, priority=priority)


def reply_privately(comment_id: str, text: str, *, account: str = "default", send_at: When | None = None,
                    priority: str | None = None) -> Job:
    """The one private reply Meta allows to a comment, within 7 days of it (Live: during the broadcast). The
    comment is the idempotency key: the same comment and text again returns the first job; another text raises
    :class:`IdempotencyConflict`, so a retried webhook handler never writes to a commenter twice."""
    document: dict[str, Any] = {"kind": "private_reply", "comment_id": comment_id, "text": text, "account": account}
    document |= {"send_at": _seconds(send_at)} if send_at is not None else {}
    return enqueue(document | ({"priority": priority} if priority is not None else {}))


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


def send_many(documents: list[dict[str, Any]], *, priority: str | None = None) -> BatchResult:
    """Validate a batch of message documents and queue the valid ones in pipelined round trips; ``priority``
    (``"bulk"`` for a campaign) applies to every document that names none.

    A key repeated inside the batch queues one job: the same message again is a duplicate of it, a different
    message under the same key is a conflict for that position.
    """
    if priority is not None:
        documents = [{"priority": priority, **document} if isinstance(document, dict) else document
                     for document in documents]
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
