"""Account runtime state as operators see it: healthy, paused by throttling, or broken until healed."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from producers.store import ACCOUNTS_INDEX_KEY, account_key, get_redis, held_key
from workers.scheduler import release_held, release_paused


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
    return [state(name, client=client) for name in sorted(client.smembers(ACCOUNTS_INDEX_KEY))]


def mark_healthy(name: str, *, client: redis.Redis | None = None) -> int:
    """Clear the broken mark and any pause, then release the held messages and those waiting out a throttle
    pause. Returns how many were released."""
    client = client or get_redis()
    client.hdel(account_key(name), "health", "health_reason", "health_error", "broken_at", "paused_until",
                "pause_reason")
    return release_held(name, client) + release_paused(name, client)
