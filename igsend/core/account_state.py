"""Account runtime state as operators see it: healthy, paused by throttling, or broken until healed."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from igsend.core.store import ACCOUNTS_INDEX_KEY, DELAYED_KEY, account_key, get_redis, held_key, job_key


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
    client.hdel(account_key(name), "health", "health_reason", "health_error", "broken_at", "paused_until",
                "pause_reason")
    return release_held(name, client) + release_paused(name, client)


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
