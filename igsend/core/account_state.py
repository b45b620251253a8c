"""Account runtime state as operators see it: healthy, paused by throttling, or broken until healed; and what
workers learned about each account's token (when it expires, its last refresh), never the token itself."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis

from igsend.core.store import (
    ACCOUNTS_INDEX_KEY,
    DELAYED_KEY,
    account_key,
    get_redis,
    held_key,
    job_key,
    token_key,
)

#: /healthz and ``igsend accounts list`` warn about a token this many days before it expires.
TOKEN_WARNING_DAYS = 7
#: Graph codes of a broken account that a new token can mend: a new token releases the account (workers.tokens).
TOKEN_ERROR_CODES = frozenset({190})
_HEALTH_FIELDS = ("health", "health_reason", "health_error", "broken_at", "paused_until", "pause_reason")


def pause(name: str, until: float, reason: str, *, client: redis.Redis | None = None) -> None:
    """Throttled by Meta: no admission for this account until ``until``."""
    pipe = (client or get_redis()).pipeline()
    pipe.hset(account_key(name), mapping={"paused_until": until, "pause_reason": reason})
    pipe.sadd(ACCOUNTS_INDEX_KEY, name)
    pipe.execute()


def mark_broken(name: str, reason: str, error: dict[str, Any] | None, *, client: redis.Redis | None = None) -> None:
    """Hold the account's messages until an operator heals it (``mark_healthy``)."""
    pipe = (client or get_redis()).pipeline()
    pipe.hset(account_key(name), mapping={"health": "broken", "health_reason": reason,
                                          "health_error": json.dumps(error), "broken_at": time.time()})
    pipe.sadd(ACCOUNTS_INDEX_KEY, name)
    pipe.execute()


def slow_down(name: str, factor: float, *, client: redis.Redis | None = None) -> None:
    """Remember the usage-driven slowdown for a minute; the next answers refresh or lift it."""
    client = client or get_redis()
    if factor >= 1.0:
        client.hdel(account_key(name), "slowdown", "slowdown_until")
        return
    pipe = client.pipeline()
    pipe.hset(account_key(name), mapping={"slowdown": f"{factor:.3f}", "slowdown_until": time.time() + 60})
    pipe.sadd(ACCOUNTS_INDEX_KEY, name)
    pipe.execute()


def state(name: str, *, client: redis.Redis | None = None) -> dict[str, Any]:
    client = client or get_redis()
    raw = client.hgetall(account_key(name))
    now = time.time()
    paused_until = float(raw.get("paused_until") or 0)
    result: dict[str, Any] = {
        "account": name,
        "health": raw.get("health") or "healthy",
        "paused_until": paused_until if paused_until > now else None,
        "held": client.zcard(held_key(name)),
    }
    if raw.get("health") == "broken":
        result["reason"] = raw.get("health_reason")
        result["error"] = json.loads(raw["health_error"]) if raw.get("health_error") else None
    if raw.get("slowdown") and float(raw.get("slowdown_until") or 0) > now:
        result["slowdown"] = float(raw["slowdown"])
    result["token"] = token_view(cast(dict[str, str], client.hgetall(token_key(name))), now)
    return result


def all_states(*, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    client = client or get_redis()
    return [state(name, client=client) for name in sorted(cast(set[str], client.smembers(ACCOUNTS_INDEX_KEY)))]


def overview(*, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Every account the workers serve or ever served (their registry, igsend.core.presence) and every account
    with runtime state: name, id, login kind, budgets, health, pause, messages held, and how many live workers
    serve it. Healthy accounts are listed too."""
    from igsend.core.presence import read

    client = client or get_redis()
    known = read(client)
    public = {**known.known, **known.served()}
    names = sorted(set(public) | cast(set[str], client.smembers(ACCOUNTS_INDEX_KEY)))
    rows = []
    for name in names:
        row = state(name, client=client)
        about = public.get(name, {})
        rows.append({"account": name, "id": about.get("id"), "login": about.get("login"),
                     "app_id": about.get("app_id"), "budgets": about.get("budgets"),
                     **{key: value for key, value in row.items() if key != "account"},
                     "workers": known.serving(name)})
    return rows


def describe(row: dict[str, Any]) -> str:
    """An account's state in a few words: healthy, paused until HH:MM:SS, broken (why), slowed to N %."""
    if row["health"] == "broken":
        return f"broken: {row.get('reason') or 'see igsend accounts list --json'}"
    if row.get("paused_until"):
        return f"paused until {time.strftime('%H:%M:%S', time.localtime(row['paused_until']))}"
    if row.get("slowdown"):
        return f"slowed to {row['slowdown']:.0%}"
    return str(row["health"])


def mark_healthy(name: str, *, client: redis.Redis | None = None) -> int:
    """Clear the broken mark and any pause, then release the held messages and those waiting out a throttle
    pause. Returns how many were released."""
    client = client or get_redis()
    client.hdel(account_key(name), *_HEALTH_FIELDS)
    return release_held(name, client) + release_paused(name, client)


def heal_after_new_token(name: str, since: float, *, client: redis.Redis | None = None) -> int | None:
    """A new token arrived (its file was written at ``since``): heal the account if it was marked broken before
    then for its token (Graph code 190, or the circuit breaker, which trips on the account's setup), and release
    what it held. Returns how many messages were released, or None when the account was not held for its token
    (broken for another reason, e.g. a policy block, stays broken until an operator heals it)."""
    client = client or get_redis()
    key = account_key(name)
    with client.pipeline() as pipe:
        try:
            pipe.watch(key)
            health, reason, error, broken_at = pipe.hmget(key, "health", "health_reason", "health_error",
                                                          "broken_at")
            if health != "broken" or float(broken_at or 0) >= since:
                return None
            try:
                code = (json.loads(error) or {}).get("code") if error else None
            except (ValueError, AttributeError):
                code = None
            if code not in TOKEN_ERROR_CODES and not str(reason or "").startswith("circuit breaker"):
                return None
            pipe.multi()
            pipe.hdel(key, *_HEALTH_FIELDS)
            pipe.execute()
        except redis.WatchError:  # changed meanwhile (another worker healed it, or it broke again): leave it
            return None
    return release_held(name, client) + release_paused(name, client)


# --- token facts (written by workers.tokens; never the token) ------------------------------------------------

def publish_token(name: str, facts: Mapping[str, Any], *, fresh: bool = False,
                  client: redis.Redis | None = None) -> None:
    """Record what a worker learned about the account's token. A None value removes that field; ``fresh`` starts
    over (the facts are about another token now)."""
    key = token_key(name)
    pipe = (client or get_redis()).pipeline()
    if fresh:
        pipe.delete(key)
    gone = [field for field, value in facts.items() if value is None]
    if gone and not fresh:
        pipe.hdel(key, *gone)
    if any(value is not None for value in facts.values()):
        pipe.hset(key, mapping={field: ("1" if value else "0") if isinstance(value, bool) else str(value)
                                for field, value in facts.items() if value is not None})
    pipe.execute()


def token_facts(name: str, *, client: redis.Redis | None = None) -> dict[str, str]:
    """The token facts as stored (for workers.tokens)."""
    return cast(dict[str, str], (client or get_redis()).hgetall(token_key(name)))


def token_view(raw: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
    """The token facts as shown: ``expires_at`` (Unix seconds, 0 = never, None = not known), ``expires_in`` (seconds
    left, negative once expired, None when unknown or never), ``data_access_expires_at`` (Facebook Login), ``source``
    (``debug_token`` or ``refresh``), ``valid`` (Meta's is_valid, when asked), ``refresh`` (refresh = true),
    ``refreshed_at``, ``refresh_after`` (a token file too young to refresh: its first refresh), ``checked_at``,
    ``next_check_at`` and ``problem`` (the last refresh or check that failed)."""
    now = time.time() if now is None else now

    def number(field: str) -> float | None:
        try:
            return float(raw[field]) if raw.get(field) not in (None, "") else None
        except ValueError:
            return None

    expires_at = number("expires_at")
    return {"expires_at": expires_at,
            "expires_in": round(expires_at - now) if expires_at else None,
            "data_access_expires_at": number("data_access_expires_at"),
            "source": raw.get("source") or None,
            "valid": None if raw.get("valid") in (None, "") else raw["valid"] == "1",
            "refresh": raw.get("refresh") == "1",
            "refreshed_at": number("refreshed_at"), "refresh_after": number("refresh_after"),
            "checked_at": number("checked_at"), "next_check_at": number("next_check_at"),
            "problem": raw.get("problem") or None}


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(seconds, 0) / 60:.0f} min"


def _date(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def describe_token(token: Mapping[str, Any]) -> str:
    """A token's expiry in a few words, and what went wrong last: ``2026-09-01 10:00 (59 d left)``, ``never
    expires``, ``unknown``, ``expired 2026-...``, then ``; refresh failed`` and the like."""
    expires_at, left = token.get("expires_at"), token.get("expires_in")
    if expires_at is None:
        text = "unknown"
        if token.get("refresh_after"):
            text += f", refresh from {_date(token['refresh_after'])}"
    elif expires_at == 0:
        text = "never expires"
    elif left is not None and left <= 0:
        text = f"expired {_date(expires_at)}"
    else:
        text = f"{_date(expires_at)} ({_span(left or 0)} left)"
    if token.get("valid") is False:
        text += "; not valid"
    if token.get("problem"):
        text += "; " + str(token["problem"]).split(":", 1)[0]
    return text


def token_warnings(*, client: redis.Redis | None = None, now: float | None = None) -> list[str]:
    """One sentence per account whose token needs someone: it expires within TOKEN_WARNING_DAYS (or expired), its
    data access does, Meta says it is not valid, or its last refresh or check failed."""
    from igsend.core.presence import read

    client = client or get_redis()
    now = time.time() if now is None else now
    known = read(client)
    names = sorted(set(known.known) | set(known.served()) | cast(set[str], client.smembers(ACCOUNTS_INDEX_KEY)))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(token_key(name))
    soon = TOKEN_WARNING_DAYS * 86400
    warnings = []
    for name, raw in zip(names, pipe.execute(), strict=True):
        token = token_view(raw, now)
        left = token["expires_in"]
        if left is not None and left <= 0:
            warnings.append(f"account {name}: its token expired {_date(token['expires_at'])}; put a new one where "
                            "the workers read it (docs: Tokens)")
        elif left is not None and left < soon:
            warnings.append(f"account {name}: its token expires in {_span(left)} ({_date(token['expires_at'])})"
                            + ("" if token["refresh"] else "; put a new one where the workers read it"))
        data_access = token["data_access_expires_at"]
        if data_access and data_access - now < soon:
            warnings.append(f"account {name}: its data access "
                            + (f"ends in {_span(data_access - now)}" if data_access > now else "has ended")
                            + f" ({_date(data_access)}); the Page's admin must log in to the app again")
        if token["valid"] is False:
            warnings.append(f"account {name}: Meta says its token is not valid (debug_token)")
        if token["problem"]:
            warnings.append(f"account {name}: {token['problem']}")
    return warnings


def release_held(account: str, client: redis.Redis | None = None) -> int:
    """Put an account's held jobs back in line (after an operator marks the account healthy)."""
    client = client or get_redis()
    ids = cast(list[str], client.zrange(held_key(account), 0, -1))
    if ids:
        now = time.time()
        pipe = client.pipeline()
        pipe.zadd(DELAYED_KEY, dict.fromkeys(ids, now))
        pipe.zrem(held_key(account), *ids)
        pipe.execute()
    return len(ids)


def release_paused(account: str, client: redis.Redis | None = None) -> int:
    """Make an account's jobs that wait out a throttle pause due now (after an operator heals it).

    The delayed set is not indexed by account; healing is rare, so it is read in chunks. Jobs parked for a
    rate slot are left alone: their slots keep the account within its budget."""
    client = client or get_redis()
    now = time.time()
    released = 0
    cursor = 0
    while True:
        chunk = cast(list[str], client.zrangebyscore(DELAYED_KEY, now, "+inf", start=cursor, num=1000))
        if not chunk:
            return released
        cursor += len(chunk)
        pipe = client.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hmget(job_key(job_id), "account", "reason", "error")
        due = [job_id for job_id, (owner, reason, error) in zip(chunk, pipe.execute(), strict=True)
               if owner == account and ((reason or "").startswith("account paused")  # deferred by the pause
                                        or '"class": "throttled"' in (error or ""))]  # throttled itself
        if due:
            pipe = client.pipeline()
            pipe.zadd(DELAYED_KEY, dict.fromkeys(due, now))
            for job_id in due:
                pipe.hdel(job_key(job_id), "next_attempt_at")
            pipe.execute()
            released += len(due)
