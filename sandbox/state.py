"""The sandbox's settings and shared state: what it accepted, who is calling, and each account's send budgets."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.conversations import Conversations
from sandbox.errors import GraphError
from sandbox.faults import Faults
from sandbox.limits import BUDGETS, HOUR, PRIVATE_REPLIES_PER_HOUR, Bucket, check_login, login_from_token
from sandbox.tokens import DAY, LONG_LIVED, TokenBook
from sandbox.wire import PRIVATE_REPLY

DEFAULT_APP_VERSION = "v27.0"  # what an unversioned call is served as (the App Dashboard's version at Meta)


@dataclass
class SandboxConfig:
    port: int = 8899
    host: str = "127.0.0.1"
    tokens: list[str] = field(default_factory=list)  # accepted access tokens
    latency_ms: float = 0.0  # added to every message POST
    error_rate: float = 0.0  # probability of a transient code-2 error
    rate_limit: float | None = None  # text-class calls/s for every account; None: Meta's per-login budget
    media_rate_limit: float | None = None  # audio/video calls/s for every account; None: Meta's (10/s)
    private_reply_limit: float | None = None  # private replies/hour for every account; None: Meta's (750)
    logins: dict[str, str] = field(default_factory=dict)  # account id -> login kind, over the token's kind
    default_login: str = "instagram"  # for tokens whose prefix names no login kind
    app_version: str = DEFAULT_APP_VERSION
    app_secret: str | None = None  # when set, every call needs appsecret_proof
    seed: int | None = None  # for the random error injection
    refresh_min_age: float = DAY  # seconds: a younger token is not refreshed (Meta: 24 hours); 0 for tests
    token_lifetime: float = LONG_LIVED  # seconds a refreshed token lives (Meta: 60 days)


def check_settings(*, latency_ms: float, error_rate: float, rate_limit: float | None,
                   media_rate_limit: float | None, private_reply_limit: float | None, logins: dict[str, str],
                   default_login: str, refresh_min_age: float = DAY, token_lifetime: float = LONG_LIVED) -> None:
    if refresh_min_age < 0 or token_lifetime <= 0:
        raise ValueError("need refresh_min_age >= 0 and token_lifetime > 0 (seconds)")
    if latency_ms < 0 or not 0 <= error_rate <= 1 or any(
            limit is not None and limit <= 0 for limit in (rate_limit, media_rate_limit, private_reply_limit)):
        raise ValueError("need latency_ms >= 0, 0 <= error_rate <= 1, rate_limit > 0 or null, "
                         "media_rate_limit > 0 or null, private_reply_limit > 0 or null")
    check_login(default_login, "default_login")
    for account, login in logins.items():
        check_login(login, f"login of account {account!r}")


def settings(config: SandboxConfig) -> dict[str, Any]:
    """The settings ``/_sandbox/config`` may change, as :func:`check_settings` takes them."""
    return {"latency_ms": config.latency_ms, "error_rate": config.error_rate, "rate_limit": config.rate_limit,
            "media_rate_limit": config.media_rate_limit, "private_reply_limit": config.private_reply_limit,
            "logins": config.logins, "default_login": config.default_login,
            "refresh_min_age": config.refresh_min_age, "token_lifetime": config.token_lifetime}


class Sandbox:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.random = random.Random(config.seed)
        self.token_book = TokenBook(config)  # outlives reset(): workers keep the tokens it issued
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seen: set[str] = set()  # digests of (account, canonical body) accepted, for the duplicate count
        self.accepted = self.throttled = self.duplicates = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.by_account: dict[str, dict[str, Any]] = {}
        self.faults = Faults()
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.uploads: dict[str, dict[str, Any]] = {}  # attachment id -> what was uploaded (never the bytes)
        self.private_replies: dict[tuple[str, str], dict[str, Any]] = {}  # (account, comment id) -> the reply
        self.conversations = Conversations()  # what was accepted, as the Conversations API shows it

    # --- who is calling -----------------------------------------------------------------------------------

    def account_key(self, account_id: str, token: str | None) -> str:
        # /me is "the token's account": keyed by a digest so the token itself is never shown
        if account_id != "me":
            return account_id
        return "me-" + hashlib.sha256((token or "").encode()).hexdigest()[:12]

    def login_of(self, account: str, token: str | None) -> str:
        """An explicit setting for the account, else the token's prefix, else the default login."""
        return self.config.logins.get(account) or login_from_token(token) or self.config.default_login

    def authenticate(self, token: str | None, proof: str | None) -> None:
        problem = self.token_book.problem(token)  # unknown, revoked or expired: 190
        if problem is not None or token is None:
            raise problem or GraphError(190)
        if self.config.app_secret:
            if not proof:
                raise GraphError(100, "API calls from the server require an appsecret_proof argument")
            expected = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof, expected):
                raise GraphError(100, "Invalid appsecret_proof provided in the API argument")

    # --- budgets --------------------------------------------------------------------------------------------

    def budgets(self, login: str) -> dict[str, float]:
        c = self.config
        return {"text": c.rate_limit if c.rate_limit is not None else BUDGETS[login]["text"],
                "media": c.media_rate_limit if c.media_rate_limit is not None else BUDGETS[login]["media"]}

    def private_reply_budget(self) -> float:
        limit = self.config.private_reply_limit
        return limit if limit is not None else PRIVATE_REPLIES_PER_HOUR

    def bucket(self, account: str, login: str, send_class: str) -> Bucket:
        """Per account and class: text and media per second, private replies per hour."""
        if send_class == PRIVATE_REPLY:
            rate, period = self.private_reply_budget(), HOUR
        else:
            rate, period = self.budgets(login)[send_class], 1.0
        bucket = self.buckets.get((account, send_class))
        if bucket is None or bucket.rate != rate:  # a live rate change starts a fresh bucket
            bucket = self.buckets[(account, send_class)] = Bucket(rate, period)
        return bucket

    def used_percent(self, account: str, send_class: str) -> int:
        bucket = self.buckets.get((account, send_class))  # looking must not create buckets for junk requests
        return bucket.used_percent() if bucket else 0

    def account_stats(self, account: str, login: str) -> dict[str, Any]:
        stats = self.by_account.setdefault(account, {"accepted": 0, "throttled": 0, "first_at": None,
                                                     "last_at": None})
        stats["login"], stats["budgets"] = login, self.budgets(login)
        return stats


SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)


def request_token(request: web.Request) -> str | None:
    """The token from the header or the query, without reading the body (for choosing the error type)."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        return credential.strip()
    return request.query.get("access_token")
