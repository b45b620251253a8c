"""The root of every error igsend raises, so a caller can ``except IgsendError`` once."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError


class IgsendError(Exception):
    """Base class of igsend's own errors. Messages never contain an access token."""


class InvalidMessage(ValidationError, IgsendError):
    """A message broke a rule; ``messages`` maps each field to marshmallow's list of rule messages."""

    def __str__(self) -> str:
        return "; ".join(_lines("", self.normalized_messages()))


def _lines(path: str, messages: Any) -> list[str]:
    """``field: rule`` per field; a nested field or list item by its path (``quick_replies[2].title: ...``)."""
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            where = path if key == "_schema" and path else f"{path}[{key}]" if isinstance(key, int) \
                else f"{path}.{key}" if path else str(key)
            lines += _lines(where, value)
        return lines
    if isinstance(messages, list | tuple) and any(isinstance(item, dict) for item in messages):
        return [line for item in messages for line in _lines(path, item)]
    rules = messages if isinstance(messages, list | tuple) else [messages]
    return [f"{path}: {' '.join(str(rule) for rule in rules)}"]


class ConfigurationError(IgsendError, ValueError):
    """A setting (``IGSEND_*``) has a value igsend cannot use; the message names it and the rule."""


class IdempotencyConflict(IgsendError):
    """The idempotency key is already bound to a different message (HTTP 409, CLI exit 1)."""

    def __init__(self, key: str, job_id: str):
        self.key = key
        self.job_id = job_id
        super().__init__(f"idempotency key {key!r} was already used for a different message (job {job_id})")


class OutsideWindow(InvalidMessage):
    """The person's window for messages from the business is closed (24 hours after their last message, 7 days
    with the HUMAN_AGENT tag; a private reply: 7 days after the comment): refused before queueing (HTTP 422 on the
    field, CLI exit 1), or dead-lettered with reason ``window closed`` when it closed while the message waited."""

    def __init__(self, field: str, rule: str):
        super().__init__({field: [rule]})


class CancelRefused(IgsendError):
    """A job that is sending or finished cannot be taken back (HTTP 409, CLI exit 1); the message says why."""

    def __init__(self, job_id: str, status: str):
        self.job_id = job_id
        self.status = status
        why = ("its POST may already be at Meta" if status == "sending" else f"it is already {status}")
        super().__init__(f"job {job_id} cannot be cancelled: {why}")


class ReplayRefused(IgsendError):
    """``dlq replay`` of a job that is not dead-lettered now (e.g. it was delivered, or is already queued)."""


class UnknownAccount(InvalidMessage):
    """No igsend worker serves the message's account: refused before it is queued (CLI exit 2, HTTP 422 naming
    the field ``account``). An :class:`InvalidMessage` too, so every path that reports a field error reports
    this one the same way."""

    def __init__(self, account: str, known: list[str], rule: str | None = None):
        self.account = account
        self.known = known
        names = ", ".join(known) or "none"
        super().__init__({"account": [rule or f"no igsend worker serves the account {account!r} (accounts: "
                                              f"{names}); add it to the workers' IGSEND_ACCOUNTS_FILE and restart "
                                              "them"]})
