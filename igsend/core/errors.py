"""The root of every error igsend raises, so a caller can ``except IgsendError`` once."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError


class IgsendError(Exception):
    """Base class of igsend's own errors. Messages never contain an access token."""


class InvalidMessage(ValidationError, IgsendError):
    """A message broke a rule; ``messages`` maps each field to marshmallow's list of rule messages."""

    def __str__(self) -> str:
        return "; ".join(f"{field}: {' '.join(_flatten(msgs))}" for field, msgs in self.normalized_messages().items())


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{k}: {' '.join(_flatten(v))}" for k, v in messages.items()]
    if isinstance(messages, list | tuple):
        return [m for item in messages for m in _flatten(item)]
    return [str(messages)]


class ConfigurationError(IgsendError, ValueError):
    """A setting (``IGSEND_*``) has a value igsend cannot use; the message names it and the rule."""


class IdempotencyConflict(IgsendError):
    """The idempotency key is already bound to a different message (HTTP 409, CLI exit 1)."""

    def __init__(self, key: str, job_id: str):
        self.key = key
        self.job_id = job_id
        super().__init__(f"idempotency key {key!r} was already used for a different message (job {job_id})")


class ReplayRefused(IgsendError):
    """``dlq replay`` of a job that is not dead-lettered now (e.g. it was delivered, or is already queued)."""


class UnknownAccount(InvalidMessage):
    """No igsend worker serves the message's account: refused before it is queued (CLI exit 2, HTTP 422 naming
    the field ``account``). An :class:`InvalidMessage` too, so every path that reports a field error reports
    this one the same way."""

    def __init__(self, account: str, known: list[str]):
        self.account = account
        self.known = known
        names = ", ".join(known) or "none"
        super().__init__({"account": [f"no igsend worker serves the account {account!r} (accounts: {names}); "
                                      "add it to the workers' IGSEND_ACCOUNTS_FILE and restart them"]})
