"""Scripted faults: what the sandbox answers instead of success, per recipient, per account or per app.

Request shapes for ``POST /_sandbox/faults`` (each answers ``{"ok": true, ...}`` or 400 with ``error``):

- ``{"recipient": R, "faults": [F, ...]}`` — queued for recipient R, one consumed per send to R, in order.
  F is ``{"code": int, "subcode"?: int, "message"?: str, "status"?: int, "is_transient"?: bool,
  "retry_after"?: seconds, "error_user_title"?: str, "error_user_msg"?: str}`` or ``{"hang": true}`` (the
  message is accepted, the answer lost). ``"sticky": true`` in F: R gets F on every send until cleared.
- ``{"recipient": R, "refusal": NAME | F}`` — R refuses every message from now on (a sticky fault); NAME is
  one of :data:`REFUSALS` (Meta's per-recipient refusals).
- ``{"account": A, "error": NAME | F}`` — every send of account A (the id in the path, or the ``me-…`` key
  shown by ``/_sandbox/messages`` for ``/me`` calls) answers F until cleared; NAME is one of
  :data:`ACCOUNT_ERRORS`. Checked right after the token, before the body.
- ``{"account": A, "conversations": NAME | F}`` — every Conversations API call for account A answers F until
  cleared (a missing permission, an expired token: NAME as for ``error``); its sends are not affected.
- ``{"app": {"seconds": N, "accounts"?: [A, ...]}}`` — the app hit its limit: for N seconds every send of
  the listed accounts (all accounts when ``accounts`` is left out: the sandbox is one app by default)
  answers ``(#4) Application request limit reached`` with Retry-After and X-App-Usage at 100. (Meta says
  calls made while throttled extend the block; the sandbox keeps N fixed so tests stay predictable.)

``DELETE /_sandbox/faults`` clears everything; ``?recipient=R``, ``?account=A`` or ``?app=1`` clears one
kind. ``GET /_sandbox/faults`` shows what is set and the named presets. Recipients named
``ERR_{code}_{subcode}`` answer that error every time without being scripted.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from sandbox.errors import GraphError, error_message

MAGIC_ERROR = re.compile(r"ERR_(\d+)(?:_(\d+))?")  # ERR_{code}_{subcode}; subcode 0 or left out = none

# Meta's refusals about one person (GRAPH_API_NOTES, "Errors"): the account stays healthy.
REFUSALS: dict[str, dict[str, Any]] = {
    "not_receiving": {"code": 200, "subcode": 1545041},
    "not_app_role": {"code": 200, "subcode": 2018028},
    "outside_window": {"code": 10, "subcode": 2018065},
    "window_closed": {"code": 10, "subcode": 2534022},
    "unavailable": {"code": 551, "subcode": 1545041},
    "no_matching_user": {"code": 100, "subcode": 2018001},
}

# Errors seen for a whole account: a Page token on the Instagram host, a wrong appsecret_proof, a missing
# permission, a disabled inbox, an expired token.
ACCOUNT_ERRORS: dict[str, dict[str, Any]] = {
    "unsupported_post": {"code": 100, "message": "Unsupported request - method type: post"},
    "invalid_appsecret_proof": {"code": 100, "message": "Invalid appsecret_proof provided in the API argument"},
    "missing_permission": {"code": 10, "message": "(#10) Application does not have permission for this action"},
    "inbox_disabled": {"code": 200, "subcode": 2534041},
    "token_expired": {"code": 190, "subcode": 463},
}

FAULT_KEYS = {"code", "subcode", "message", "status", "is_transient", "retry_after", "error_user_title",
              "error_user_msg", "sticky", "hang", "drop"}


def check_fault(fault: Any, *, allow_hang: bool = True) -> dict[str, Any]:
    """A scripted fault must be a Graph error (``code``) or, where allowed, a lost connection (``hang`` after
    accepting, ``drop`` before)."""
    if not isinstance(fault, dict) or not (isinstance(fault.get("code"), int) or (
            allow_hang and (fault.get("hang") is True or fault.get("drop") is True))):
        needs = "an integer 'code', 'hang': true or 'drop': true" if allow_hang else "an integer 'code'"
        raise ValueError(f"a fault needs {needs}, got {fault!r}")
    unknown = set(fault) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(FAULT_KEYS)}")
    status = fault.get("status", 400)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"a fault's 'status' must be an HTTP error status, got {fault.get('status')!r}")
    if not isinstance(fault.get("retry_after", 0), int | float):
        raise ValueError(f"a fault's 'retry_after' must be seconds, got {fault.get('retry_after')!r}")
    if fault.get("subcode") is not None and not isinstance(fault["subcode"], int):
        raise ValueError(f"a fault's 'subcode' must be an integer, got {fault['subcode']!r}")
    return fault


def preset(value: Any, presets: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    if isinstance(value, str):
        if value not in presets:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(presets)}")
        return dict(presets[value])
    return check_fault(value, allow_hang=False)


def fault_error(fault: dict[str, Any]) -> GraphError:
    transient = fault.get("is_transient")
    return GraphError(int(fault["code"]), fault.get("message"), subcode=fault.get("subcode") or None,
                      status=fault.get("status"), transient=None if transient is None else bool(transient),
                      retry_after=fault.get("retry_after"), user_title=fault.get("error_user_title"),
                      user_msg=fault.get("error_user_msg"))


def shown(fault: dict[str, Any]) -> dict[str, Any]:
    """A fault as introspection shows it: with the message the sandbox will send."""
    if fault.get("hang") or fault.get("drop"):
        return dict(fault)
    return {**fault, "message": fault.get("message") or error_message(fault["code"], fault.get("subcode"))}


@dataclass
class AppLimit:
    until: float  # time.monotonic()
    accounts: frozenset[str] | None  # None: every account

    def covers(self, account: str, now: float) -> bool:
        return now < self.until and (self.accounts is None or account in self.accounts)


class Faults:
    def __init__(self) -> None:
        self.queued: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.sticky: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}  # account -> the Conversations API's answer
        self.apps: list[AppLimit] = []

    def add(self, spec: Any) -> dict[str, Any]:
        """Apply one ``POST /_sandbox/faults`` body; raise ValueError for a malformed one."""
        if not isinstance(spec, dict):
            raise ValueError("the body must be a JSON object")
        if "app" in spec:
            return self._add_app(spec["app"])
        if "account" in spec:
            account = spec["account"]
            if not isinstance(account, str) or not account:
                raise ValueError("'account' must be a non-empty string")
            if "conversations" in spec:
                self.conversations[account] = preset(spec["conversations"], ACCOUNT_ERRORS, "account error")
                return {"ok": True, "account": account, "conversations": shown(self.conversations[account])}
            self.accounts[account] = preset(spec.get("error"), ACCOUNT_ERRORS, "account error")
            return {"ok": True, "account": account, "error": shown(self.accounts[account])}
        recipient = spec.get("recipient")
        if not isinstance(recipient, str) or not recipient:
            raise ValueError("'recipient' must be a non-empty string (or give 'account' or 'app')")
        if "refusal" in spec:
            self.sticky[recipient] = preset(spec["refusal"], REFUSALS, "refusal")
        faults = [check_fault(f) for f in spec.get("faults", [])]
        for fault in faults:
            if fault.get("sticky"):
                self.sticky[recipient] = fault
            else:
                self.queued[recipient].append(fault)
        return {"ok": True, "queued": len(self.queued[recipient]), "sticky": recipient in self.sticky}

    def _add_app(self, app: Any) -> dict[str, Any]:
        if not isinstance(app, dict):
            raise ValueError("'app' must be an object: {\"seconds\": N, \"accounts\": [ids]}")
        seconds, accounts = app.get("seconds"), app.get("accounts")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= 86400:
            raise ValueError(f"app 'seconds' must be a number in (0, 86400], got {seconds!r}")
        if accounts is not None and (not isinstance(accounts, list) or not accounts
                                     or not all(isinstance(a, str) and a for a in accounts)):
            raise ValueError(f"app 'accounts' must be a non-empty list of account ids, got {accounts!r}")
        self.apps.append(AppLimit(time.monotonic() + seconds, None if accounts is None else frozenset(accounts)))
        return {"ok": True, "app": {"seconds": seconds, "accounts": accounts}}

    def clear(self, *, recipient: str | None = None, account: str | None = None, app: bool = False) -> None:
        if recipient is None and account is None and not app:
            type(self).__init__(self)
            return
        if recipient is not None:
            self.queued.pop(recipient, None)
            self.sticky.pop(recipient, None)
        if account is not None:
            self.accounts.pop(account, None)
            self.conversations.pop(account, None)
        if app:
            self.apps.clear()

    def app_limit(self, account: str) -> GraphError | None:
        """Code 4 while an app limit covers the account; Retry-After is the time left."""
        now = time.monotonic()
        self.apps = [limit for limit in self.apps if now < limit.until]
        left = max((limit.until - now for limit in self.apps if limit.covers(account, now)), default=0.0)
        if left <= 0:
            return None
        return GraphError(4, retry_after=left)

    def account_error(self, account: str) -> GraphError | None:
        fault = self.accounts.get(account)
        return fault_error(fault) if fault else None

    def conversations_error(self, account: str) -> GraphError | None:
        fault = self.conversations.get(account)
        return fault_error(fault) if fault else None

    def next_for(self, recipient: str) -> dict[str, Any] | None:
        """Sticky fault, else the next scripted one (consumed), else a magic ERR_{code}_{subcode} id."""
        if recipient in self.sticky:
            return self.sticky[recipient]
        queue = self.queued.get(recipient)
        if queue:
            return queue.popleft()
        match = MAGIC_ERROR.fullmatch(recipient)
        if match:
            return {"code": int(match.group(1)), "subcode": int(match.group(2) or 0) or None}
        return None

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        recipients = {r: {"queued": [shown(f) for f in self.queued.get(r, ())],
                          "sticky": shown(self.sticky[r]) if r in self.sticky else None}
                      for r in {*self.sticky, *(r for r, q in self.queued.items() if q)}}
        apps = [{"accounts": None if a.accounts is None else sorted(a.accounts),
                 "seconds_left": math.ceil(a.until - now)} for a in self.apps if now < a.until]
        return {"recipients": recipients, "accounts": {a: shown(f) for a, f in self.accounts.items()},
                "conversations": {a: shown(f) for a, f in self.conversations.items()},
                "apps": apps, "refusals": {n: shown(f) for n, f in REFUSALS.items()},
                "account_errors": {n: shown(f) for n, f in ACCOUNT_ERRORS.items()}}
