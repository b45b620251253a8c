"""The account registry: which Instagram accounts this worker sends as, and their tokens (read only here).

The default account comes from ``IGSEND_ACCESS_TOKEN`` / ``IGSEND_ACCOUNT_ID`` / ``IGSEND_LOGIN``; more come
from the TOML file named by ``IGSEND_ACCOUNTS_FILE``::

    [accounts.shop]
    id = "17841400000000001"      # IG user id (Instagram Login) or Page id (Facebook Login); "me" works too
    login = "instagram"            # or "facebook"
    token_env = "SHOP_IG_TOKEN"    # or token = "..." (keep the file out of version control)
    # graph_url = "https://graph.instagram.com"   # optional; defaults by login kind
    [accounts.shop.limits]
    text_per_second = 300          # Meta's budget for text, links, reactions, stickers (and images/posts)
    media_per_second = 10          # Meta's budget for audio and video
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache

LOGIN_HOSTS = {"instagram": "https://graph.instagram.com", "facebook": "https://graph.facebook.com"}
DEFAULT_API_VERSION = "v25.0"
DEFAULT_TEXT_RATE = 300.0
DEFAULT_MEDIA_RATE = 10.0


class AccountError(LookupError):
    """An account is missing or misconfigured. The message never contains a token."""


@dataclass(frozen=True)
class Account:
    name: str
    id: str
    login: str
    graph_url: str
    api_version: str
    token: str = field(repr=False)
    app_secret: str | None = field(default=None, repr=False)
    text_per_second: float = DEFAULT_TEXT_RATE
    media_per_second: float = DEFAULT_MEDIA_RATE

    @property
    def messages_url(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}/{self.id}/messages"

    def appsecret_proof(self) -> str | None:
        """HMAC-SHA256 of the token keyed by the app secret (Graph API, "Securing Requests")."""
        if not self.app_secret:
            return None
        return hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()

    def rate(self, send_class: str) -> float:
        return self.media_per_second if send_class == "media" else self.text_per_second


def _login(value: str, where: str) -> str:
    if value not in LOGIN_HOSTS:
        raise AccountError(f"{where}: login must be 'instagram' or 'facebook' (got {value!r})")
    return value


def load_accounts(env: dict[str, str] | None = None) -> dict[str, Account]:
    """Read every configured account. Accounts without a token are left out (they cannot send)."""
    env = dict(os.environ if env is None else env)
    version = env.get("IGSEND_API_VERSION") or DEFAULT_API_VERSION
    app_secret = env.get("IGSEND_APP_SECRET") or None
    accounts: dict[str, Account] = {}
    token = env.get("IGSEND_ACCESS_TOKEN")
    if token:
        login = _login(env.get("IGSEND_LOGIN") or "instagram", "IGSEND_LOGIN")
        accounts["default"] = Account(
            name="default", id=env.get("IGSEND_ACCOUNT_ID") or "me", login=login,
            graph_url=env.get("IGSEND_GRAPH_URL") or LOGIN_HOSTS[login], api_version=version, token=token,
            app_secret=app_secret,
            text_per_second=float(env.get("IGSEND_TEXT_RATE") or DEFAULT_TEXT_RATE),
            media_per_second=float(env.get("IGSEND_MEDIA_RATE") or DEFAULT_MEDIA_RATE),
        )
    path = env.get("IGSEND_ACCOUNTS_FILE")
    if path:
        accounts.update(_load_file(path, env, version, app_secret))
    return accounts


def _load_file(path: str, env: dict[str, str], version: str, app_secret: str | None) -> dict[str, Account]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise AccountError(f"IGSEND_ACCOUNTS_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AccountError(f"IGSEND_ACCOUNTS_FILE: {path} is not valid TOML: {exc}") from None
    accounts = {}
    for name, spec in (data.get("accounts") or {}).items():
        where = f"{path}: accounts.{name}"
        token = spec.get("token") or env.get(spec.get("token_env", ""), "")
        if not token:
            continue
        login = _login(spec.get("login", "instagram"), where)
        limits = spec.get("limits", {})
        accounts[name] = Account(
            name=name, id=str(spec.get("id", "me")), login=login,
            graph_url=spec.get("graph_url") or env.get("IGSEND_GRAPH_URL") or LOGIN_HOSTS[login],
            api_version=spec.get("api_version", version), token=token,
            app_secret=spec.get("app_secret") or app_secret,
            text_per_second=float(limits.get("text_per_second", DEFAULT_TEXT_RATE)),
            media_per_second=float(limits.get("media_per_second", DEFAULT_MEDIA_RATE)),
        )
    return accounts


@lru_cache(maxsize=1)
def registry() -> dict[str, Account]:
    """The accounts of this worker process, read once."""
    return load_accounts()


def get_account(name: str) -> Account:
    try:
        return registry()[name]
    except KeyError:
        known = ", ".join(sorted(registry())) or "none"
        raise AccountError(f"account {name!r} is not configured on this worker (configured: {known})") from None
