"""The Redis connection and the key layout that producers and workers share.

Every igsend key starts with ``igsend:`` so an operator can tell them from Celery's own keys.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from producers.settings import get_settings

PREFIX = "igsend:"


def job_key(job_id: str) -> str:
    """Hash holding one job's status record."""
    return f"{PREFIX}job:{job_id}"


def attempts_key(job_id: str) -> str:
    """List of the job's attempts (JSON), oldest first."""
    return f"{PREFIX}job:{job_id}:attempts"


def lock_key(job_id: str) -> str:
    """Held while one execution of the job may be talking to Meta; stops a redelivered copy from racing it."""
    return f"{PREFIX}lock:{job_id}"


def idempotency_key(account: str, key: str) -> str:
    return f"{PREFIX}idem:{account}:{key}"


def account_key(account: str) -> str:
    """Hash of an account's runtime state: health, pause, usage-driven slowdown."""
    return f"{PREFIX}account:{account}"


def limiter_key(account: str, send_class: str) -> str:
    return f"{PREFIX}rl:{account}:{send_class}"


def held_key(account: str) -> str:
    """Jobs held back while their account is marked broken (sorted by when they were held)."""
    return f"{PREFIX}held:{account}"


DELAYED_KEY = f"{PREFIX}delayed"  # job ids waiting for a retry or a rate slot, scored by due time
DLQ_KEY = f"{PREFIX}dlq"  # job id -> dead-letter entry (JSON)
DLQ_INDEX_KEY = f"{PREFIX}dlq:index"  # job ids scored by when they died
ACCOUNTS_INDEX_KEY = f"{PREFIX}accounts"  # names of accounts that have runtime state
STATS_KEY = f"{PREFIX}stats"  # counters: unknown outcomes, skipped redeliveries, ...


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    # Retries with backoff let producers and workers ride out a Redis restart instead of failing the call.
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def get_redis(url: str | None = None) -> redis.Redis:
    """The process-wide client for ``url`` (default: ``IGSEND_REDIS_URL``)."""
    return _client(url or get_settings().redis_url)


def decode_record(raw: dict[str, str]) -> dict[str, Any]:
    """Turn a job hash into the status JSON of DESIGN.md (plus timestamps and the message)."""
    if not raw:
        return {}
    record: dict[str, Any] = {
        "id": raw.get("id"),
        "status": raw.get("status"),
        "kind": raw.get("kind"),
        "account": raw.get("account"),
        "recipient": raw.get("recipient"),
        "attempts": int(raw.get("attempts") or 0),
        "created_at": _num(raw.get("created_at")),
        "updated_at": _num(raw.get("updated_at")),
    }
    for field in ("result", "error", "message"):
        if raw.get(field):
            record[field] = json.loads(raw[field])
    for field in ("next_attempt_at", "delivered_at", "dead_at"):
        if raw.get(field):
            record[field] = _num(raw[field])
    if raw.get("reason"):
        record["reason"] = raw["reason"]
    return record


def _num(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
