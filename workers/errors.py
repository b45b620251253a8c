"""The error taxonomy: every Graph API answer and transport failure maps to one of six outcomes.

Sources: "Graph API / Handling Errors", "Messenger Platform / Common Error Codes" and "rate limits" (2026), as
summarised in the error table of docs/delivery.md. Decide by Graph code, never by HTTP status alone: Meta answers
throttling with 400 or 429 depending on the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # retry with backoff
    THROTTLED = "throttled"  # retry after Meta's wait, and pause the whole account
    PERMANENT = "permanent"  # dead-letter now
    ACCOUNT_BROKEN = "account_broken"  # dead-letter and hold the account's other messages
    UNKNOWN = "unknown"  # the POST may have been sent; never resend blindly


THROTTLE_CODES = {4, 17, 32, 341, 613, 80001, 80002, 80006}
#: Code 4 is the app's limit: every account of the app is paused, not only the one that got the answer.
APP_THROTTLE_CODE = 4

_RECIPIENT = "about this recipient only: the message is dead-lettered, the account keeps sending"

# (code, subcode, outcome, reason): (code, subcode) rows first, then code-only rows; the first match wins.
# Subcode None = any subcode. A code above 100,000 is a subcode Meta documents on its own.
RULES: list[tuple[int, int | None, Outcome, str]] = [
    (1, 1357046, Outcome.UNKNOWN, "Meta says it was sent but answered with an error"),
    (613, 2018338, Outcome.PERMANENT, "misuse of message tags"),
    (100, 2018001, Outcome.PERMANENT, "no matching user"),
    (100, 2534014, Outcome.PERMANENT, "no matching user"),
    # Refusals about one person: never hold the account for them.
    (10, 2534022, Outcome.PERMANENT, "outside the allowed messaging window"),
    (10, 2018278, Outcome.PERMANENT, "outside the allowed messaging window"),
    (10, 2018065, Outcome.PERMANENT, "outside the allowed messaging window"),
    (10, 2018108, Outcome.PERMANENT, "this person can't receive messages now"),
    (200, 1545041, Outcome.PERMANENT, "this person isn't receiving messages from you"),
    (200, 2018028, Outcome.PERMANENT, "the recipient has no role on the app (app in development mode)"),
    (551, None, Outcome.PERMANENT, "this person can't receive messages now"),
    # About the account: hold its messages until an operator heals it.
    (10, 1893063, Outcome.ACCOUNT_BROKEN, "account restricted for policy reasons"),
    (200, 2534041, Outcome.ACCOUNT_BROKEN, "the account owner disabled message access"),
    (190, None, Outcome.ACCOUNT_BROKEN, "access token invalid or expired"),
    (368, None, Outcome.ACCOUNT_BROKEN, "temporarily blocked for policy violations"),
    (2534068, None, Outcome.PERMANENT, "multi-image not enabled for the account"),
    (1, None, Outcome.TRANSIENT, "unknown error, retry later"),
    (2, None, Outcome.TRANSIENT, "temporary service error"),
    (100, None, Outcome.PERMANENT, "invalid parameter or message data"),
    (10, None, Outcome.PERMANENT, "permission missing, or a refusal about this recipient"),
    *[(code, None, Outcome.THROTTLED, "rate limited") for code in sorted(THROTTLE_CODES)],
]
_PERMISSION_RANGE = range(200, 300)  # 200-299: permission errors, some of them about one recipient
#: the code-only rows whose code is a subcode documented on its own: they match that subcode under any code
_BARE_SUBCODES = {code for code, subcode, _, _ in RULES if subcode is None and code > 100_000}

# Permanent errors that may be the account's setup rather than the message (a token for the wrong host,
# a bad appsecret_proof, a removed permission): one alone dead-letters its message; the same one for several
# recipients in a row trips the account's circuit breaker (workers.breaker), which holds the account.
_SUSPECT_CODES = {10, 100} | set(_PERMISSION_RANGE)
_PERMISSION_WORDS = ("permission", "not authorized", "not allowed", "access token")
_BLOCKED_WORDS = ("block",)


@dataclass(frozen=True)
class Verdict:
    """What one attempt came to, with the details an operator needs (no secrets)."""

    outcome: Outcome
    reason: str
    http_status: int | None = None
    code: int | None = None
    subcode: int | None = None
    message: str | None = None
    fbtrace_id: str | None = None
    #: Unrecognised codes (and codes 1 and 2) are retried only a few times before dead-lettering.
    bounded: bool = False
    #: The error may be the account's setup, not this message: count it toward the account's circuit breaker.
    suspect: bool = False
    #: Shown as the error's class when it is more specific than the outcome (e.g. "redirect").
    label: str | None = None

    @property
    def app_wide(self) -> bool:
        """A throttle of the whole Meta app (code 4): every account of the app pauses."""
        return self.outcome is Outcome.THROTTLED and self.code == APP_THROTTLE_CODE

    @property
    def signature(self) -> str:
        """What makes two errors "the same error" for the circuit breaker."""
        return f"{self.label or self.http_status}:{self.code}:{self.subcode}:{(self.message or '')[:80]}"

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "subcode": self.subcode, "message": self.message or self.reason,
                "fbtrace_id": self.fbtrace_id, "http_status": self.http_status,
                "class": self.label or self.outcome.value}

    def scrubbed(self, secrets: list[str]) -> Verdict:
        """The same verdict with tokens (configured or token-shaped) blanked out of Meta's message."""
        if not self.message:
            return self
        from workers.logs import redact  # the one place that knows what a token looks like

        message = redact(self.message)
        for secret in secrets:
            if secret:
                message = message.replace(secret, "[redacted]")
        return replace(self, message=message) if message != self.message else self


def classify_answer(http_status: int, body: Any, *, location: str | None = None) -> Verdict:
    """Classify any HTTP answer to a send: delivered, or what went wrong."""
    if 200 <= http_status < 300:
        if isinstance(body, dict) and body.get("recipient_id"):
            return Verdict(Outcome.DELIVERED, "accepted by Meta", http_status)
        if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
            # Meta may well have sent it: a resend could deliver it twice.
            return Verdict(Outcome.UNKNOWN, f"HTTP {http_status} without a recipient_id: Meta may have sent it; "
                           "not resent", http_status)
    if 300 <= http_status < 400:
        where = f" to {location[:200]}" if location else ""
        return Verdict(Outcome.ACCOUNT_BROKEN, f"the Graph API answered HTTP {http_status} (a redirect{where}); "
                       "igsend never follows redirects on a POST: check the account's graph_url",
                       http_status, label="redirect")
    return classify_error(http_status, body)


def classify_error(http_status: int, body: Any) -> Verdict:
    """Classify an error answer (non-2xx, or a 2xx carrying a Graph error)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if http_status == 429:  # throttling by a front end that sends no Graph body
            return Verdict(Outcome.THROTTLED, "HTTP 429 without a Graph error", http_status)
        if http_status >= 500:
            return Verdict(Outcome.TRANSIENT, f"HTTP {http_status} without a Graph error", http_status)
        return Verdict(Outcome.TRANSIENT, f"HTTP {http_status} with an unexpected body", http_status, bounded=True)
    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    message = str(error.get("message") or "")[:500] or None
    details: dict[str, Any] = {"http_status": http_status, "code": code, "subcode": subcode, "message": message,
               "fbtrace_id": error.get("fbtrace_id")}
    for rule_code, rule_subcode, outcome, reason in RULES:
        if (code == rule_code and rule_subcode in (None, subcode)) or (
                rule_code in _BARE_SUBCODES and subcode == rule_code):
            return _refine(Verdict(outcome, reason, **details), code, subcode, message)
    if code is not None and code in _PERMISSION_RANGE:
        return Verdict(Outcome.PERMANENT, "permission missing, or a refusal about this recipient", suspect=True,
                       **details)
    if error.get("is_transient") or http_status >= 500:
        return Verdict(Outcome.TRANSIENT, "Meta marked the error transient", **details)
    return Verdict(Outcome.TRANSIENT, "unrecognised Graph error", bounded=True, **details)


def _refine(verdict: Verdict, code: int | None, subcode: int | None, message: str | None) -> Verdict:
    if code in (1, 2) and verdict.outcome is Outcome.TRANSIENT:
        # "Wait and retry", except when Meta's text says it is a block or a permission (GRAPH_API_NOTES).
        if _mentions(message, _BLOCKED_WORDS):
            return replace(verdict, outcome=Outcome.PERMANENT, reason="the person blocked the account")
        if _mentions(message, _PERMISSION_WORDS):
            return replace(verdict, outcome=Outcome.PERMANENT, reason="permission error", suspect=True)
        return replace(verdict, bounded=True)
    if verdict.outcome is Outcome.PERMANENT and subcode is None and code in _SUSPECT_CODES:
        return replace(verdict, suspect=True)
    return verdict


def _mentions(message: str | None, words: tuple[str, ...]) -> bool:
    return message is not None and any(word in message.lower() for word in words)


def classify_transport(exc: requests.RequestException) -> Verdict:
    """A request that got no HTTP answer. Only failures before the request was written are safe to resend."""
    name = type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout) or _caused_by(exc, (NewConnectionError, ConnectTimeoutError)):
        return Verdict(Outcome.TRANSIENT, f"could not connect to the Graph API ({name})")
    if isinstance(exc, requests.ReadTimeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return Verdict(Outcome.UNKNOWN, f"request sent but no answer came back ({name})")
    return Verdict(Outcome.UNKNOWN, f"transport failure after sending ({name})")


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, types):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            if isinstance(reason, types):
                return True
            current = reason
            continue
        for arg in current.args:
            if isinstance(arg, BaseException) and isinstance(arg, types):
                return True
            if isinstance(arg, BaseException) and _caused_by(arg, types):
                return True
        current = current.__cause__ or current.__context__
    return False


def _int(value: Any) -> int | None:
    try:
        return int(value)  # int(None) is a TypeError too
    except (TypeError, ValueError):
        return None
