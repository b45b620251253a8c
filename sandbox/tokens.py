"""Access tokens as the sandbox's Meta knows them: which it accepts, when each was issued and when it expires, and
the two token endpoints igsend's workers call.

- ``GET /refresh_access_token?grant_type=ig_refresh_token&access_token=TOKEN`` (Instagram Platform, "Refresh
  Access Token"): refreshes a long-lived Instagram-Login token that is at least 24 hours old and not expired;
  answers ``{"access_token", "token_type": "bearer", "expires_in"}``, the new token valid for 60 days. Meta does
  not say that the old token stops working, so here it keeps working until its own expiry. Meta documents no
  error for a token too young to refresh: the sandbox answers code 100 with an explanation.
- ``GET /{version}/debug_token?input_token=TOKEN`` (Graph API, "Debug-Token"; the caller's own token in the
  ``Authorization`` header or ``access_token``): ``{"data": {"app_id", "type", "application", "expires_at"
  (0 = never), "data_access_expires_at", "issued_at", "is_valid", "scopes", ...}}``; an input token Meta
  does not accept answers ``is_valid: false`` with an ``error``, still HTTP 200.

Tokens given on the command line (``--token``, ``IGSEND_SANDBOX_TOKENS``) count as issued a day before the sandbox
started, so they may be refreshed at once; Instagram-Login ones (and tokens of the default login kind when that is
instagram) expire 60 days after that, Page tokens (Facebook Login) never (Meta: Page tokens from long-lived user
tokens do not expire); data access lasts 90 days. ``POST /_sandbox/tokens {"token", "issued_at"?, "expires_at"?,
"data_access_expires_at"?, "valid"?}`` adds a token or changes what the sandbox knows of one (``expires_at`` in
the past: calls with it answer 190/463; ``valid: false``: 190/467). ``GET /_sandbox/tokens`` shows what it knows,
each token by a digest (the first 12 hex digits of its SHA-256), never the token. The youngest token that may be
refreshed (``refresh_min_age``, seconds, default a day) and the life of refreshed tokens (``token_lifetime``,
default 60 days) are settings of ``/_sandbox/config``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from aiohttp import web

from sandbox.errors import GraphError
from sandbox.limits import login_from_token

DAY = 24 * 3600.0
#: Meta: a long-lived Instagram User token lasts 60 days, and so does a refreshed one.
LONG_LIVED = 60 * DAY
#: Meta: data access of a Facebook-Login token lasts 90 days.
DATA_ACCESS = 90 * DAY


def digest(token: str) -> str:
    """How the sandbox names a token anywhere it shows one (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass
class TokenInfo:
    issued_at: float
    expires_at: float  # 0: never
    data_access_expires_at: float
    valid: bool = True
    refreshed_from: str | None = None  # digest of the token it replaced

    def public(self, token: str) -> dict[str, Any]:
        return {"digest": digest(token), **asdict(self)}


class _Config(Protocol):
    tokens: list[str]
    default_login: str


class TokenBook:
    """The tokens the sandbox accepts: the configured ones (read live from the sandbox's config) and those it
    issued or was told about."""

    def __init__(self, config: _Config):
        self.config = config
        self.started = time.time()
        self.known: dict[str, TokenInfo] = {}
        self.refreshes = 0
        self.refused_refreshes = 0

    def info(self, token: str | None) -> TokenInfo | None:
        if not token:
            return None
        found = self.known.get(token)
        if found is None and token in self.config.tokens:
            issued = self.started - DAY
            login = login_from_token(token) or self.config.default_login
            found = self.known[token] = TokenInfo(issued_at=issued,
                                                  expires_at=issued + LONG_LIVED if login == "instagram" else 0.0,
                                                  data_access_expires_at=self.started + DATA_ACCESS)
        return found

    def problem(self, token: str | None) -> GraphError | None:
        """Why a call with this token fails (Meta's code 190 and its subcodes), or None when it is accepted."""
        info = self.info(token)
        if info is None:
            return GraphError(190)
        if not info.valid:
            return GraphError(190, subcode=467)
        if info.expires_at and info.expires_at <= time.time():
            return GraphError(190, subcode=463)
        return None

    def issue(self, replacing: str, lifetime: float) -> tuple[str, TokenInfo]:
        now = time.time()
        token = "IGAA" + secrets.token_urlsafe(48).replace("-", "A").replace("_", "B")
        info = self.known[token] = TokenInfo(issued_at=now, expires_at=now + lifetime,
                                             data_access_expires_at=now + DATA_ACCESS,
                                             refreshed_from=digest(replacing))
        return token, info

    def describe(self) -> dict[str, Any]:
        for token in self.config.tokens:  # so that configured tokens are listed too
            self.info(token)
        return {"count": len(self.known), "refreshes": self.refreshes, "refused_refreshes": self.refused_refreshes,
                "tokens": [info.public(token) for token, info in self.known.items()]}

    def update(self, body: Any) -> dict[str, Any]:
        """``POST /_sandbox/tokens``: add a token, or change what the sandbox knows of one."""
        if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body["token"]:
            raise ValueError("the body must be an object with a non-empty 'token'")
        unknown = set(body) - {"token", "issued_at", "expires_at", "data_access_expires_at", "valid"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        token = body["token"]
        info = self.info(token)
        if info is None:
            now = time.time()
            login = login_from_token(token) or self.config.default_login
            info = self.known[token] = TokenInfo(issued_at=now - DAY,
                                                 expires_at=now - DAY + LONG_LIVED if login == "instagram" else 0.0,
                                                 data_access_expires_at=now + DATA_ACCESS)
        for key in ("issued_at", "expires_at", "data_access_expires_at"):
            if key in body:
                value = body[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be Unix seconds (expires_at 0: never), got {value!r}")
                setattr(info, key, float(value))
        if "valid" in body:
            if not isinstance(body["valid"], bool):
                raise ValueError(f"valid must be true or false, got {body['valid']!r}")
            info.valid = body["valid"]
        return {"ok": True, "token": info.public(token)}


async def refresh(book: TokenBook, request: web.Request, token: str | None, *, login: str, min_age: float,
                  lifetime: float) -> web.Response:
    """``GET /refresh_access_token``; ``token`` has passed the caller's authentication (and appsecret_proof)."""
    if request.query.get("grant_type") != "ig_refresh_token":
        raise GraphError(100, "(#100) grant_type must be ig_refresh_token")
    if login != "instagram":
        raise GraphError(100, "(#100) refresh_access_token refreshes long-lived Instagram User access tokens "
                              "(Instagram Login) only")
    info = book.info(token)
    if token is None or info is None:  # the caller authenticates first; never reached
        raise GraphError(190)
    if time.time() - info.issued_at < min_age:
        book.refused_refreshes += 1
        hours = min_age / 3600
        raise GraphError(100, f"(#100) The access token cannot be refreshed yet: a long-lived token can be "
                              f"refreshed once it is at least {hours:g} hours old")
    new, _ = book.issue(token, lifetime)
    book.refreshes += 1
    return web.json_response({"access_token": new, "token_type": "bearer", "expires_in": int(lifetime)})


async def debug_token(book: TokenBook, request: web.Request, *, login: str) -> web.Response:
    """``GET /{version}/debug_token``; the caller's token has passed authentication."""
    input_token = request.query.get("input_token")
    if not input_token:
        raise GraphError(100, "(#100) The parameter input_token is required")
    info = book.info(input_token)
    kind = "PAGE" if (login_from_token(input_token) or login) == "facebook" else "USER"
    problem = book.problem(input_token)
    data: dict[str, Any] = {"app_id": "1000000000000001", "type": kind, "application": "igsend sandbox",
                            "is_valid": problem is None, "scopes": ["instagram_basic", "instagram_manage_messages",
                                                                    "pages_messaging"]}
    if info is not None:
        data.update({"expires_at": int(info.expires_at), "data_access_expires_at": int(info.data_access_expires_at),
                     "issued_at": int(info.issued_at)})
    if problem is not None:
        body = problem.body(login)["error"]
        data["error"] = {"code": body["code"], "message": body["message"],
                         **({"subcode": body["error_subcode"]} if "error_subcode" in body else {})}
    return web.json_response({"data": data})
