"""The account registry: which Instagram accounts this worker sends as, and their tokens (read only here).

The default account comes from ``IGSEND_ACCESS_TOKEN`` / ``IGSEND_ACCOUNT_ID`` / ``IGSEND_LOGIN``; more come
from the TOML file named by ``IGSEND_ACCOUNTS_FILE``::

    [accounts.shop]
    id = "17841400000000001"      # IG user id (Instagram Login) or Page id (Facebook Login); "me" works too
    login = "instagram"            # or "facebook"
    token_env = "SHOP_IG_TOKEN"    # or token = "..." (keep the file out of version control), or token_file
    app_id = "shop-app"            # optional: accounts of one Meta app share its app-wide limit (code 4)
    app_secret_env = "SHOP_APP_SECRET"   # optional, or app_secret = "..."; default IGSEND_APP_SECRET
    ordered = true                 # optional: its messages go in order per recipient (default false)
    # token_file = "tokens/shop.token"   # the token in a file of its own, re-read when it changes (workers.tokens)
    # refresh = true                 # with token_file, Instagram Login only: workers refresh the token in the file
    # graph_url = "https://graph.instagram.com"   # optional; defaults by login kind
    [accounts.shop.limits]
    text_per_second = 100          # default: Meta's budget for the login kind (see BUDGETS)
    media_per_second = 10

Every mistake in the configuration is an :class:`AccountError` naming the file, the account and the field,
raised when the accounts are loaded, so a worker that cannot send refuses to start instead of dead-lettering.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

from igsend.core.errors import IgsendError
from igsend.core.toml_files import read_toml

LOGIN_HOSTS = {"instagram": "https://graph.instagram.com", "facebook": "https://graph.facebook.com"}
DEFAULT_API_VERSION = "v27.0"  # v26.0 and v25.0 stay accepted: any vN.N is sent as set
DEFAULT_APP = "default"


@dataclass(frozen=True)
class Budget:
    """``calls`` per ``per`` seconds, for one account."""

    calls: float
    per: float = 1.0

    @property
    def per_second(self) -> float:
        return self.calls / self.per


#: Meta's Send API budgets per professional account, by send class and login kind ("Messenger Platform rate
#: limits" / Graph API rate limiting, checked 2026-11: Instagram Login 100/s, Facebook Login 300/s, audio and
#: video 10/s on both). A new class is one line here plus its kinds in ``schemas.SEND_CLASS``. Private replies
#: have their own: 750 calls per hour per account for posts and reels (GRAPH_API_NOTES.md, "Later kinds").
BUDGETS: dict[str, dict[str, Budget]] = {
    # text, links, reactions, stickers; and images, GIFs and posts, which Meta names in neither class
    # (docs/rate-limits.md)
    "text": {"instagram": Budget(100), "facebook": Budget(300)},
    "media": {"instagram": Budget(10), "facebook": Budget(10)},  # audio and video
    "private_reply": {"instagram": Budget(750, per=3600), "facebook": Budget(750, per=3600)},
    # the Conversations API, asked when a send's answer was lost (workers/reconcile.py): 2 calls/s per account
    "conversations": {"instagram": Budget(2), "facebook": Budget(2)},
}


def default_rate(send_class: str, login: str) -> float:
    return BUDGETS[send_class][login].per_second


class AccountError(IgsendError, LookupError):
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
    #: calls per second by send class; classes left out get Meta's budget for the login kind
    limits: Mapping[str, float] = field(default_factory=dict)
    app_id: str = DEFAULT_APP
    #: Its messages go in order per recipient unless a message says ``"ordered": false`` (``ordered = true``).
    ordered: bool = False
    #: The Instagram account id Meta's webhooks name, when ``id`` is a Page id (Facebook Login).
    instagram_id: str | None = None
    #: The file the token is read from (``token_file``): workers re-read it when it changes (workers.tokens).
    token_file: str | None = None
    #: Workers refresh the long-lived Instagram-Login token and write the new one to ``token_file``.
    refresh: bool = False

    @property
    def messages_url(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}/{self.id}/messages"

    @property
    def attachments_url(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}/{self.id}/message_attachments"

    def appsecret_proof(self) -> str | None:
        """HMAC-SHA256 of the token keyed by the app secret (Graph API, "Securing Requests")."""
        if not self.app_secret:
            return None
        return hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()

    def rate(self, send_class: str) -> float:
        return self.limits.get(send_class) or default_rate(send_class, self.login)

    @property
    def text_per_second(self) -> float:
        return self.rate("text")

    @property
    def media_per_second(self) -> float:
        return self.rate("media")

    def public(self) -> dict[str, Any]:
        """What may be shown anywhere (never the token or the app secret)."""
        return {"name": self.name, "id": self.id, "login": self.login, "app_id": self.app_id,
                "budgets": {send_class: self.rate(send_class) for send_class in BUDGETS}, "ordered": self.ordered,
                **({"instagram_id": self.instagram_id} if self.instagram_id else {})}


def _login(value: Any, where: str) -> str:
    if value not in LOGIN_HOSTS:
        raise AccountError(f"{where}: login must be 'instagram' or 'facebook' (got {value!r})")
    return cast(str, value)


def _token(value: Any, where: str) -> str:
    """Refuse what the HTTP library could not put in a header: its error text would carry the token."""
    if not isinstance(value, str) or not value:
        raise AccountError(f"{where}: no token (set token or token_env)")
    bad = next((ch for ch in value if not (ch.isascii() and ch.isprintable()) or ch.isspace()), None)
    if bad is not None:
        raise AccountError(f"{where}: the token holds a character tokens never hold (U+{ord(bad):04X}); "
                           "check for pasted spaces or invisible characters (the token is not shown)")
    return value


def _rate(value: Any, where: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise AccountError(f"{where}: must be a positive number of calls per second (got {value!r})") from None
    if not math.isfinite(rate) or rate <= 0:
        raise AccountError(f"{where}: must be a positive number of calls per second (got {value!r})")
    return rate


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise AccountError(f"{where}: must be an http(s) URL (got {value!r})")
    return value


def load_accounts(env: Mapping[str, str] | None = None) -> dict[str, Account]:
    """Read every configured account; raise :class:`AccountError` on the first mistake."""
    env = dict(os.environ if env is None else env)
    version = env.get("IGSEND_API_VERSION") or DEFAULT_API_VERSION
    app_secret = env.get("IGSEND_APP_SECRET") or None
    accounts: dict[str, Account] = {}
    token = env.get("IGSEND_ACCESS_TOKEN")
    if token:
        login = _login(env.get("IGSEND_LOGIN") or "instagram", "IGSEND_LOGIN")
        limits = {}
        for send_class, name in (("text", "IGSEND_TEXT_RATE"), ("media", "IGSEND_MEDIA_RATE")):
            if env.get(name):
                limits[send_class] = _rate(env[name], name)
        accounts["default"] = Account(
            name="default", id=env.get("IGSEND_ACCOUNT_ID") or "me", login=login,
            graph_url=_url(env.get("IGSEND_GRAPH_URL") or LOGIN_HOSTS[login], "IGSEND_GRAPH_URL"),
            api_version=version, token=_token(token, "IGSEND_ACCESS_TOKEN"), app_secret=app_secret,
            limits=limits, app_id=env.get("IGSEND_APP_ID") or DEFAULT_APP,
        )
    path = env.get("IGSEND_ACCOUNTS_FILE")
    if path:
        for name, account in _load_file(path, env, version, app_secret).items():
            if name in accounts:
                raise AccountError(f"{path}: accounts.{name}: the name is taken by the account from "
                                   "IGSEND_ACCESS_TOKEN; choose another")
            accounts[name] = account
    group = env.get("IGSEND_GROUP")
    return _of_group(accounts, group, env.get("IGSEND_GROUPS") or "") if group else accounts


def _of_group(accounts: dict[str, Account], group: str, path: str) -> dict[str, Account]:
    """The accounts of this worker's group (IGSEND_GROUP, a group of IGSEND_GROUPS): a worker serves only them, so
    a message of another group's account is refused by producers here (UnknownAccount) rather than sent from two
    groups with two limiters. Every account the group lists must have a token here."""
    from igsend.core.errors import ConfigurationError
    from igsend.core.groups import load_groups

    if not path:
        raise AccountError(f"IGSEND_GROUP: names a group ({group!r}) but IGSEND_GROUPS names no groups file")
    try:
        groups = load_groups(path)
    except ConfigurationError as exc:
        raise AccountError(str(exc)) from None
    if group not in groups:
        raise AccountError(f"IGSEND_GROUP: no group {group!r} in {path} (groups: {', '.join(groups)})")
    missing = [name for name in groups[group].accounts if name not in accounts]
    if missing:
        raise AccountError(f"{path}: groups.{group}.accounts: {missing[0]!r} has no token on this worker (configured: "
                           f"{', '.join(sorted(accounts)) or 'none'}); add it to IGSEND_ACCOUNTS_FILE")
    return {name: account for name, account in accounts.items() if name in groups[group].accounts}


_FILE_FIELDS = {"id", "login", "token", "token_env", "token_file", "refresh", "graph_url", "api_version", "app_id",
                "app_secret", "app_secret_env", "limits", "ordered", "instagram_id"}


def _load_file(path: str, env: dict[str, str], version: str, app_secret: str | None) -> dict[str, Account]:
    data = read_toml(path, setting="IGSEND_ACCOUNTS_FILE", error=AccountError)
    table = data.get("accounts", {})
    if not isinstance(table, dict):
        raise AccountError(f"{path}: 'accounts' must be a table of [accounts.NAME] sections")
    accounts = {}
    for name, spec in table.items():
        where = f"{path}: accounts.{name}"
        if not isinstance(spec, dict):
            raise AccountError(f"{where}: must be a table ([accounts.{name}]), got {type(spec).__name__}")
        unknown = sorted(set(spec) - _FILE_FIELDS)
        if unknown:
            raise AccountError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FILE_FIELDS))})")
        accounts[name] = _account_from(name, spec, where, env, version, app_secret,
                                       base=os.path.dirname(os.path.abspath(path)))
    return accounts


def _account_from(name: str, spec: dict[str, Any], where: str, env: dict[str, str], version: str,
                  app_secret: str | None, *, base: str = ".") -> Account:
    token_file = None
    if "token_file" in spec:
        others = [key for key in ("token", "token_env") if key in spec]
        if others:
            raise AccountError(f"{where}.token_file: set one of token, token_env or token_file (also set: "
                               f"{', '.join(others)})")
        if not isinstance(spec["token_file"], str) or not spec["token_file"]:
            raise AccountError(f"{where}.token_file: must be the path of a file (got {spec['token_file']!r})")
        # relative to the accounts file's folder, so the pair can move together
        token_file = os.path.join(base, os.path.expanduser(spec["token_file"]))
        token = read_token_file(token_file, f"{where}.token_file")
    elif "token" in spec:
        token = _token(spec["token"], f"{where}.token")
    elif "token_env" in spec:
        variable = spec["token_env"]
        if not env.get(str(variable)):
            raise AccountError(f"{where}.token_env: the variable {variable} is not set or empty")
        token = _token(env[str(variable)], f"{where} (from {variable})")
    else:
        raise AccountError(f"{where}: no token (set token, token_env or token_file)")
    login = _login(spec.get("login", "instagram"), f"{where}.login")
    refresh = _flag(spec.get("refresh", False), f"{where}.refresh")
    if refresh:
        _check_refresh(token_file, login, f"{where}.refresh")
    secret = spec.get("app_secret") or (env.get(str(spec["app_secret_env"])) if "app_secret_env" in spec else None)
    if "app_secret_env" in spec and not secret:
        raise AccountError(f"{where}.app_secret_env: the variable {spec['app_secret_env']} is not set or empty")
    limits_spec = spec.get("limits", {})
    if not isinstance(limits_spec, dict):
        raise AccountError(f"{where}.limits: must be a table ([accounts.{name}.limits])")
    limits = {}
    for key, value in limits_spec.items():
        send_class = key.removesuffix("_per_second")
        if send_class not in BUDGETS or not key.endswith("_per_second"):
            known = ", ".join(f"{c}_per_second" for c in BUDGETS)
            raise AccountError(f"{where}.limits: unknown limit {key!r} (known: {known})")
        limits[send_class] = _rate(value, f"{where}.limits.{key}")
    return Account(
        name=name, id=str(spec.get("id", "me")), login=login,
        graph_url=_url(spec.get("graph_url") or env.get("IGSEND_GRAPH_URL") or LOGIN_HOSTS[login],
                       f"{where}.graph_url"),
        api_version=str(spec.get("api_version", version)), token=token, app_secret=secret or app_secret,
        limits=limits, app_id=str(spec.get("app_id") or env.get("IGSEND_APP_ID") or DEFAULT_APP),
        ordered=_flag(spec.get("ordered", False), f"{where}.ordered"),
        instagram_id=str(spec["instagram_id"]) if spec.get("instagram_id") else None,
        token_file=token_file, refresh=refresh,
    )


#: A token file larger than this is not a token file.
MAX_TOKEN_FILE = 64 * 1024


def read_token_file(path: str, where: str) -> str:
    """The token in ``path`` (surrounding whitespace and the final newline dropped); an :class:`AccountError`
    naming ``where`` and the file when it cannot be read or holds no single token. Never shows the content."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise AccountError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_FILE:
        raise AccountError(f"{where}: {path} is larger than {MAX_TOKEN_FILE} bytes: not a token file")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise AccountError(f"{where}: {path} is not UTF-8 text") from None
    if not text:
        raise AccountError(f"{where}: {path} is empty")
    return _token(text, f"{where}: {path}")


def _check_refresh(token_file: str | None, login: str, where: str) -> None:
    """``refresh = true`` needs a token file igsend may rewrite, and a token Meta refreshes (Instagram Login)."""
    if token_file is None:
        raise AccountError(f'{where}: refresh = true needs token_file = "PATH": the refreshed token is written '
                           "there (a token or token_env cannot be rewritten)")
    if login != "instagram":
        raise AccountError(f"{where}: refresh = true is for Instagram-Login tokens (login = \"instagram\"); "
                           f"this account uses login = {login!r}, whose Page tokens do not expire")
    folder = os.path.dirname(token_file) or "."
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AccountError(f"{where}: refresh = true writes the new token next to {token_file}, but this user "
                           f"cannot write to {folder}")


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise AccountError(f"{where}: must be true or false (got {value!r})")
    return value


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


def accounts_of_app(app_id: str) -> list[Account]:
    """The accounts this worker serves that share one Meta app (and its app-wide limit)."""
    return [account for account in registry().values() if account.app_id == app_id]


_secrets: list[str] = []


def secrets() -> list[str]:
    """Every configured token and app secret, for blanking out of anything stored or logged.

    Always the same list object, so a holder sees the tokens read from a token file later (:func:`use_token`)."""
    for account in registry().values():
        for value in (account.token, account.app_secret):
            if value and value not in _secrets:
                _secrets.append(value)
    return _secrets


def newer_token_from_file(account: Account) -> bool:
    """After Meta refused the account's token (190): if its token file already holds another token (written while
    this process had not re-read it yet), send with that one from now on and say so; the refusal was the old
    token's, not the account's."""
    if not account.token_file:
        return False
    try:
        token = read_token_file(account.token_file, f"account {account.name}: token_file")
    except AccountError:
        return False
    if token == account.token:
        return False
    use_token(account.name, token)
    return True


def use_token(name: str, token: str) -> Account:
    """Send as ``name`` with ``token`` from now on, in this process (a token file changed: workers.tokens)."""
    accounts = registry()
    account = accounts[name] = replace(accounts[name], token=token)
    if token not in _secrets:
        _secrets.append(token)
    return account
