"""Token lifecycle in a worker: token files re-read when they change, each token's expiry learned from Meta, and
long-lived Instagram-Login tokens refreshed (``refresh = true``). docs/tokens.md says the same for operators.

Every worker process runs one :class:`TokenKeeper` thread, started when the worker is ready (workers.app):

- **Token files** (``token_file`` in the accounts file). Every second the thread looks at each file's stat; once
  a changed file has stayed the same for one look, it reads it, and this process's next send uses the new token
  (:func:`workers.accounts.use_token`). Every process does this, not only the one that wrote the file. A file that
  cannot be read or holds no token is reported once and the token in use is kept. A new token heals an account
  held for its token (Graph code 190, or the circuit breaker) since before the file was written
  (:func:`igsend.core.account_state.heal_after_new_token`); so does a worker starting with a file written after
  the account broke.
- **Expiry and refresh**, per account by one worker at a time (a Redis lease, ``igsend:token-lease:NAME``): the
  token is checked when the facts in Redis are about another token (their fingerprint differs: a new file, a new
  environment) and at their ``next_check_at`` (``IGSEND_TOKEN_CHECK_EVERY`` after the last check, a day by
  default; a failed check is tried again within the hour). Facebook Login asks ``GET /{version}/debug_token``.
  Instagram Login with ``refresh = true`` calls ``GET /refresh_access_token`` once fewer than
  ``IGSEND_TOKEN_REFRESH_DAYS`` days remain (50 of the 60: about every ten days, leaving weeks of daily retries
  if Meta refuses), or, while the expiry is not known, once the token file is at least 24 hours old (Meta
  refreshes no younger token). The new token is written to the file atomically (a temporary file with mode 0600
  in the same folder, fsync, rename), unless the file changed meanwhile (the operator's token wins); every process
  then picks it up as above. Instagram Login without ``refresh`` has no endpoint telling its expiry: unknown.
- What was learned goes to ``igsend:token:NAME`` (:func:`igsend.core.account_state.publish_token`): expiry (0 =
  never), data-access expiry, source, last check and refresh, the last failure, and a fingerprint (the first 16
  hex digits of the token's SHA-256) saying which token the facts are about. Never the token: it stays in this
  process and its file.
- A failed refresh or check logs a warning, counts in ``igsend_token_refreshes_total{outcome="failed"}`` or
  ``igsend_token_checks_total{outcome="failed"}``, and shows as the account's token ``problem`` (``igsend accounts
  list``, ``/healthz``, ``igsend_token_problem``); the token in use is kept.

Meta documents both endpoints with the token in the query string (``access_token``, ``input_token``): those URLs
are never logged, and a transport failure is reported by its type only, since requests' texts carry the URL.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import requests

from igsend.core import account_state
from igsend.core.errors import ConfigurationError
from igsend.core.settings import positive_number
from igsend.core.store import get_redis, token_lease_key
from workers.accounts import Account, AccountError, read_token_file, registry, use_token
from workers.logs import redact
from workers.metrics import TOKEN_CHECKS, TOKEN_REFRESHES, TOKEN_RELOADS

log = logging.getLogger("igsend.tokens")

DAY = 24 * 3600.0
DEFAULT_CHECK_EVERY = DAY
DEFAULT_REFRESH_DAYS = 50.0
#: Meta refreshes a long-lived Instagram-Login token only once it is at least 24 hours old.
MIN_REFRESH_AGE = DAY
#: A failed check or refresh is tried again after at most this long.
RETRY_AFTER = 3600.0
#: Seconds between two looks at the token files.
WATCH_EVERY = 1.0
#: Seconds between two looks at the facts in Redis (at most IGSEND_TOKEN_CHECK_EVERY).
LOOK_EVERY = 5.0
LEASE_SECONDS = 120
TIMEOUT = (5.0, 30.0)

# KEYS: the lease. ARGV: me. Drop the lease only if this process still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _number(env: Mapping[str, str], name: str, default: float, what: str) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    value = positive_number(raw)
    if value is None:
        raise ConfigurationError(f"{name}: must be a positive number of {what} (got {raw!r})")
    return value


@dataclass(frozen=True)
class TokenPolicy:
    #: Seconds between two checks of one token (IGSEND_TOKEN_CHECK_EVERY).
    check_every: float = DEFAULT_CHECK_EVERY
    #: Refresh an Instagram-Login token once fewer than this many days remain (IGSEND_TOKEN_REFRESH_DAYS).
    refresh_days: float = DEFAULT_REFRESH_DAYS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenPolicy:
        env = os.environ if env is None else env
        return cls(check_every=_number(env, "IGSEND_TOKEN_CHECK_EVERY", cls.check_every, "seconds"),
                   refresh_days=_number(env, "IGSEND_TOKEN_REFRESH_DAYS", cls.refresh_days, "days"))


def fingerprint(token: str) -> str:
    """Which token some facts are about, without the token: the first 64 bits of its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class TokenCallFailed(Exception):
    """A token call to Meta failed; the text is safe to show (no token, no URL)."""


class MetaTokens:
    """The two token calls, on a session of their own (the send path's pool stays for sends)."""

    def __init__(self) -> None:
        self.session = requests.Session()

    def refresh(self, account: Account) -> tuple[str, float]:
        """``GET {graph_url}/refresh_access_token?grant_type=ig_refresh_token&access_token=...`` (Instagram Platform,
        "Refresh Access Token"): the new token and the seconds it lives."""
        body = self._get(account, f"{account.graph_url.rstrip('/')}/refresh_access_token",
                         {"grant_type": "ig_refresh_token", "access_token": account.token}, header=False)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or len(token) > 8192 or not all(
                ch.isascii() and ch.isprintable() and not ch.isspace() for ch in token):
            raise TokenCallFailed("the answer holds no usable access_token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise TokenCallFailed(f"the answer's expires_in is not a number of seconds ({expires_in!r})")
        return token, float(expires_in)

    def debug(self, account: Account) -> dict[str, Any]:
        """``GET {graph_url}/{version}/debug_token?input_token=...`` (Graph API, "Debug-Token"), the caller being the
        token itself (in the Authorization header): Meta's ``data`` object."""
        body = self._get(account, f"{account.graph_url.rstrip('/')}/{account.api_version}/debug_token",
                         {"input_token": account.token}, header=True)
        data = body.get("data")
        if not isinstance(data, dict):
            raise TokenCallFailed("the answer has no data object")
        return data

    def _get(self, account: Account, url: str, params: dict[str, str], *, header: bool) -> dict[str, Any]:
        host = urlsplit(url).netloc
        headers = {"Authorization": f"Bearer {account.token}"} if header else {}
        proof = account.appsecret_proof()
        if proof:
            params = {**params, "appsecret_proof": proof}
        try:
            response = self.session.get(url, params=params, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:  # its text holds the URL, and so the token: the type only
            raise TokenCallFailed(f"no answer from {host} ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if 300 <= response.status_code < 400:
            raise TokenCallFailed(f"{host} answered HTTP {response.status_code} (a redirect, not followed)")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code, subcode = error.get("code"), error.get("error_subcode")
            message = _scrub(str(error.get("message") or "")[:300], account.token)
            raise TokenCallFailed(f"Graph error {code}{f'/{subcode}' if subcode else ''}: {message}")
        if response.status_code != 200 or not isinstance(body, dict):
            raise TokenCallFailed(f"{host} answered HTTP {response.status_code} without a Graph answer")
        return body


def _scrub(text: str, *tokens: str) -> str:
    text = redact(text)
    for token in tokens:
        text = text.replace(token, "[redacted]")
    return text


def write_token_file(path: str, token: str, *, expected: str) -> bool:
    """Replace the token in ``path`` atomically (temporary file with mode 0600 in the same folder, fsync, rename),
    only if the file still holds ``expected``. Returns False (and writes nothing) when it does not. Raises OSError
    when the file cannot be written."""
    try:
        if read_token_file(path, path) != expected:
            return False
    except AccountError:
        return False
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # the rename itself survives a crash once the folder is on disk
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
    except OSError:
        pass
    return True


@dataclass
class _File:
    applied: tuple[int, int, int]  # (mtime_ns, size, inode) of the content in use
    pending: tuple[int, int, int] | None = None  # a change seen once: read when it looks the same next time


def _stat_id(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_mtime_ns, st.st_size, st.st_ino


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


class TokenKeeper:
    """One thread per worker process (see the module's docstring)."""

    def __init__(self, client: redis.Redis | None = None, *, policy: TokenPolicy | None = None,
                 meta: MetaTokens | None = None, watch_every: float = WATCH_EVERY):
        self.client = client or get_redis()
        self.policy = policy or TokenPolicy.from_env()
        self.meta = meta or MetaTokens()
        self.watch_every = watch_every
        self.me = uuid.uuid4().hex
        self.release = self.client.register_script(_RELEASE)
        self.files: dict[str, _File] = {}
        self._said: dict[str, str] = {}
        self._next_look = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="igsend-tokens", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a token problem never stops the worker; the next tick tries again
                log.exception("looking after the tokens failed; trying again")
            if self._stop.wait(self.watch_every):
                return

    def tick(self) -> None:
        changed = self.watch_files()
        if changed or time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + min(LOOK_EVERY, self.policy.check_every)
            self.look()

    # --- token files -------------------------------------------------------------------------------------------

    def watch_files(self) -> list[str]:
        """Read the token files that changed (and settled); returns the accounts whose token changed."""
        changed = []
        for account in list(registry().values()):
            if account.token_file and self._watch(account.name, account.token_file):
                changed.append(account.name)
        return changed

    def _watch(self, name: str, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError as exc:
            self._say(name, f"account {name}: cannot read its token file {path} ({exc.strerror}); it keeps sending "
                            "with the token it has")
            return False
        seen = _stat_id(st)
        known = self.files.get(name)
        if known is None:  # first look: the token in use was read from this file when the registry was loaded
            self.files[name] = _File(seen)
            if st.st_mode & 0o077:
                log.warning("account %s: its token file %s can be read by other users (mode %o); chmod 600 it",
                            name, path, st.st_mode & 0o777)
            changed = self._apply(name, path)  # it may have changed since (another process refreshed it)
            self._heal(name, st.st_mtime)  # also a file written after the account broke, while no worker ran
            return changed
        if seen == known.applied:
            known.pending = None
            return False
        if seen != known.pending:  # changed since the last look: let the writer finish first
            known.pending = seen
            return False
        known.applied, known.pending = seen, None
        if not self._apply(name, path):
            return False
        self._heal(name, st.st_mtime)
        return True

    def _apply(self, name: str, path: str) -> bool:
        """Read the token file; use its token from now on if it is new. Returns whether it was."""
        try:
            token = read_token_file(path, f"account {name}: token_file")
        except AccountError as exc:
            self._say(name, f"{exc}; it keeps sending with the token it has")
            return False
        self._said.pop(name, None)
        if token == registry()[name].token:
            return False
        use_token(name, token)
        TOKEN_RELOADS.labels(name).inc()
        log.info("account %s: a new token from %s; this process sends with it from now on", name, path)
        return True

    def _settled(self, account: Account) -> bool:
        """Whether this process uses what the account's token file holds now (or the account has no file)."""
        if not account.token_file:
            return True
        known = self.files.get(account.name)
        try:
            current = _stat_id(os.stat(account.token_file))
        except OSError:
            return True  # reported by _watch; the token in use is still the one to check
        return known is not None and known.pending is None and current == known.applied

    def _heal(self, name: str, since: float) -> None:
        try:
            released = account_state.heal_after_new_token(name, since, client=self.client)
        except redis.RedisError as exc:
            log.warning("account %s: could not release it after its new token (%s); `igsend accounts heal %s`",
                        name, type(exc).__name__, name)
            return
        if released is not None:
            log.warning("account %s: it was held for its token; its new token released it and %d held "
                        "message(s)", name, released)

    def _say(self, name: str, message: str) -> None:
        """Log a standing problem once, not every second."""
        if self._said.get(name) != message:
            self._said[name] = message
            log.warning("%s", message)

    # --- expiry and refresh ------------------------------------------------------------------------------------

    def look(self) -> None:
        for name in list(registry()):
            try:
                self._look_at(name)
            except redis.RedisError as exc:
                log.warning("account %s: could not read or write its token facts in Redis (%s)", name,
                            type(exc).__name__)

    def _due(self, account: Account, facts: Mapping[str, str]) -> bool:
        if facts.get("fingerprint") != fingerprint(account.token):
            return True
        try:
            return time.time() >= float(facts.get("next_check_at") or 0)
        except ValueError:
            return True

    def _look_at(self, name: str) -> None:
        account = registry()[name]
        if not self._settled(account):  # this process is about to switch tokens: the facts would be about the old
            return
        if not self._due(account, account_state.token_facts(name, client=self.client)):
            return
        lease = token_lease_key(name)
        if not self.client.set(lease, self.me, nx=True, px=LEASE_SECONDS * 1000):
            return  # another worker is on it
        try:
            facts = account_state.token_facts(name, client=self.client)  # it may have been checked meanwhile
            if self._due(account, facts):
                self.check(account, facts)
        finally:
            self.release(keys=[lease], args=[self.me])

    def check(self, account: Account, facts: Mapping[str, str]) -> None:
        """Learn the token's expiry (and refresh it when due); publish what was learned."""
        same = facts.get("fingerprint") == fingerprint(account.token)
        base: dict[str, Any] = {"fingerprint": fingerprint(account.token), "login": account.login,
                                "refresh": account.refresh, "checked_at": time.time()}
        if account.login == "facebook":
            self._debug(account, base, same)
        elif account.refresh:
            self._refresh(account, facts if same else {}, base, same)
        else:  # Instagram Login, not refreshed: Meta has no call that tells its expiry
            account_state.publish_token(account.name, {**base, "next_check_at": time.time() + self.policy.check_every},
                                        fresh=not same, client=self.client)

    def _failed(self, account: Account, base: dict[str, Any], same: bool, problem: str) -> None:
        now = time.time()
        account_state.publish_token(account.name, {
            **base, "problem": problem, "problem_at": now,
            "next_check_at": now + min(self.policy.check_every, RETRY_AFTER)}, fresh=not same, client=self.client)
        log.warning("account %s: %s; it keeps sending with the token it has", account.name, problem)

    def _debug(self, account: Account, base: dict[str, Any], same: bool) -> None:
        try:
            data = self.meta.debug(account)
        except TokenCallFailed as exc:
            TOKEN_CHECKS.labels(account.name, "failed").inc()
            self._failed(account, base, same, f"check failed: debug_token: {exc}")
            return
        TOKEN_CHECKS.labels(account.name, "ok").inc()
        now = time.time()
        facts = {**base, "source": "debug_token", "expires_at": _unix(data.get("expires_at"), zero=0.0),
                 "data_access_expires_at": _unix(data.get("data_access_expires_at"), zero=None),
                 "valid": data.get("is_valid") is True, "problem": None, "problem_at": None,
                 "next_check_at": now + self.policy.check_every}
        account_state.publish_token(account.name, facts, fresh=not same, client=self.client)
        expires_at = facts["expires_at"]
        log.info("account %s: its token %s (debug_token%s)", account.name,
                 "expiry is not known" if expires_at is None else "never expires" if expires_at == 0 else
                 f"expires {_when(expires_at)}", "" if facts["valid"] else ": not valid")

    def _refresh(self, account: Account, facts: Mapping[str, str], base: dict[str, Any], same: bool) -> None:
        now = time.time()
        path = account.token_file or ""
        expires_at = _unix(facts.get("expires_at"), zero=None)
        if expires_at is not None and expires_at - now > self.policy.refresh_days * DAY:
            account_state.publish_token(account.name, {**base, "next_check_at": now + self.policy.check_every},
                                        client=self.client)
            return
        if expires_at is not None and expires_at <= now:
            self._failed(account, base, same, f"refresh impossible: the token expired {_when(expires_at)} (Meta "
                                              f"refreshes unexpired tokens only); put a new one in {path}")
            return
        if expires_at is None:
            try:
                written = os.stat(path).st_mtime
            except OSError as exc:
                self._failed(account, base, same, f"refresh failed: cannot read {path} ({exc.strerror})")
                return
            if now - written < MIN_REFRESH_AGE:  # Meta refuses younger tokens: wait, do not warn
                after = written + MIN_REFRESH_AGE
                account_state.publish_token(account.name, {
                    **base, "refresh_after": after, "next_check_at": min(after, now + self.policy.check_every)},
                    fresh=not same, client=self.client)
                log.info("account %s: its token file is less than 24 hours old; first refresh from %s (Meta "
                         "refreshes tokens at least 24 hours old)", account.name, _when(after))
                return
        try:
            token, expires_in = self.meta.refresh(account)
        except TokenCallFailed as exc:
            TOKEN_REFRESHES.labels(account.name, "failed").inc()
            self._failed(account, base, same, f"refresh failed: {exc}")
            return
        try:
            written_now = write_token_file(path, token, expected=account.token)
        except OSError as exc:
            TOKEN_REFRESHES.labels(account.name, "failed").inc()
            self._failed(account, base, same, f"refresh failed: Meta gave a new token but {path} could not be "
                                              f"written ({exc.strerror})")
            return
        if not written_now:
            log.warning("account %s: %s changed while its token was being refreshed; the file's token stays and "
                        "the refreshed one is dropped", account.name, path)
            return
        TOKEN_REFRESHES.labels(account.name, "ok").inc()
        done = time.time()
        account_state.publish_token(account.name, {
            "fingerprint": fingerprint(token), "login": account.login, "refresh": True, "source": "refresh",
            "expires_at": done + expires_in, "refreshed_at": done, "checked_at": done,
            "next_check_at": done + self.policy.check_every}, fresh=True, client=self.client)
        log.info("account %s: token refreshed and written to %s; it expires %s", account.name, path,
                 _when(done + expires_in))


def _unix(value: Any, *, zero: float | None) -> float | None:
    """Unix seconds from Meta or Redis; ``zero`` stands for 0 (expires_at: never; data access: none)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return zero if number == 0 else number
