"""The error taxonomy: every Graph API answer and transport failure maps to one of six outcomes.

Sources: "Graph API / Handling Errors", "Messenger Platform / Common Error Codes" and "rate limits" (2026), as
summarised in shared/GRAPH_API_NOTES.md. Decide by Graph code, never by HTTP status alone: Meta answers
throttling with 400 or 429 depending on the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
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

# (code, subcode) rows first, then code-only rows; the first match wins. Subcode None = any subcode.
RULES: list[tuple[int, int | None, Outcome, str]] = [
    (1, 1357046, Outcome.UNKNOWN, "Meta says it was sent but answered with an error"),
    (613, 2018338, Outcome.PERMANENT, "misuse of message tags"),
    (100, 2018001, Outcome.PERMANENT, "no matching user"),
    (100, 2534014, Outcome.PERMANENT, "no matching user"),
    (10, 2534022, Outcome.PERMANENT, "outside the allowed messaging window"),
    (10, 2018278, Outcome.PERMANENT, "outside the allowed messaging window"),
    (10, 2018108, Outcome.PERMANENT, "this person can't receive messages now"),
    (10, 1893063, Outcome.ACCOUNT_BROKEN, "account restricted for policy reasons"),
    (200, 2534041, Outcome.ACCOUNT_BROKEN, "the account owner disabled message access"),
    (2534068, None, Outcome.PERMANENT, "multi-image not enabled for the account"),
    (1, None, Outcome.TRANSIENT, "unknown error, retry later"),
    (2, None, Outcome.TRANSIENT, "temporary service error"),
    (100, None, Outcome.PERMANENT, "invalid parameter or message data"),
    (551, None, Outcome.PERMANENT, "this person can't receive messages now"),
    (190, None, Outcome.ACCOUNT_BROKEN, "access token invalid or expired"),
    (368, None, Outcome.ACCOUNT_BROKEN, "temporarily blocked for policy violations"),
    (10, None, Outcome.ACCOUNT_BROKEN, "permission missing or removed"),
    *[(code, None, Outcome.THROTTLED, "rate limited") for code in sorted(THROTTLE_CODES)],
]
_PERMISSION_RANGE = range(200, 300)  # 200-299: permission errors


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
    #: Unrecognised codes are retried only a few times before dead-lettering.
    bounded: bool = False

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "subcode": self.subcode, "message": self.message or self.reason,
                "fbtrace_id": self.fbtrace_id, "http_status": self.http_status, "class": self.outcome.value}


def classify_error(http_status: int, body: Any) -> Verdict:
    """Classify a non-2xx answer (or a 2xx without the expected fields)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if http_status >= 500 or http_status == 429:
            return Verdict(Outcome.TRANSIENT, f"HTTP {http_status} without a Graph error", http_status)
        return Verdict(Outcome.TRANSIENT, f"HTTP {http_status} with an unexpected body", http_status, bounded=True)
    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    details = {"http_status": http_status, "code": code, "subcode": subcode,
               "message": str(error.get("message") or "")[:500] or None,
               "fbtrace_id": error.get("fbtrace_id")}
    for rule_code, rule_subcode, outcome, reason in RULES:
        if code == rule_code and rule_subcode in (None, subcode):
            return Verdict(outcome, reason, **details)
        if rule_subcode is None and rule_code > 100_000 and subcode == rule_code:  # documented as bare subcodes
            return Verdict(outcome, reason, **details)
    if code is not None and code in _PERMISSION_RANGE:
        return Verdict(Outcome.ACCOUNT_BROKEN, "permission missing or removed", **details)
    if error.get("is_transient") or http_status >= 500:
        return Verdict(Outcome.TRANSIENT, "Meta marked the error transient", **details)
    return Verdict(Outcome.TRANSIENT, "unrecognised Graph error", bounded=True, **details)


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
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and isinstance(arg, types):
                return True
            if isinstance(arg, BaseException) and _caused_by(arg, types):
                return True
        current = current.__cause__ or current.__context__
    return False


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
