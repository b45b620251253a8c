"""The dead-letter queue: durable entries in Redis, listed, shown, replayed and purged by operators.

An entry keeps the job id, account, recipient, kind, the message (never a token), every attempt and the
final reason. Entries do not expire: an operator decides their fate.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from producers.celery_app import NEW_PRIORITY, get_app, publish
from producers.errors import ReplayRefused
from producers.store import DLQ_INDEX_KEY, DLQ_KEY, PENDING_KEY, attempts_key, get_redis, job_key

#: Only a job whose record still says it ended without delivery may be replayed.
REPLAYABLE = ("dead", "unknown")


def entry_for(record: dict[str, Any], attempts: list[dict[str, Any]], reason: str,
              error: dict[str, Any] | None, now: float) -> dict[str, Any]:
    return {
        "id": record["id"], "account": record.get("account"), "recipient": record.get("recipient"),
        "kind": record.get("kind"), "status": record.get("status"), "message": record.get("message"),
        "reason": reason, "error": error, "attempts": attempts, "dead_at": now,
    }


def add(pipe: redis.client.Pipeline, entry: dict[str, Any]) -> None:
    pipe.hset(DLQ_KEY, entry["id"], json.dumps(entry, ensure_ascii=False))
    pipe.zadd(DLQ_INDEX_KEY, {entry["id"]: entry["dead_at"]})


def remove(pipe: redis.client.Pipeline, job_id: str) -> None:
    pipe.hdel(DLQ_KEY, job_id)
    pipe.zrem(DLQ_INDEX_KEY, job_id)


def list_entries(*, account: str | None = None, limit: int | None = None,
                 client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Entries, oldest death first."""
    client = client or get_redis()
    ids = client.zrange(DLQ_INDEX_KEY, 0, -1)
    entries = []
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start:chunk_start + 500]
        for raw in client.hmget(DLQ_KEY, chunk):
            if raw:
                entry = json.loads(raw)
                if account is None or entry.get("account") == account:
                    entries.append(entry)
        if limit is not None and len(entries) >= limit:
            return entries[:limit]
    return entries


def show(job_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    raw = (client or get_redis()).hget(DLQ_KEY, job_id)
    return json.loads(raw) if raw else None


def size(*, client: redis.Redis | None = None) -> int:
    return (client or get_redis()).zcard(DLQ_INDEX_KEY)


def replay(job_id: str, *, client: redis.Redis | None = None) -> bool:
    """Send a dead message again under the same job id; its new outcome shows in ``igsend status``.

    Returns False when there is no such entry; raises :class:`ReplayRefused` when the job's record says it
    is not dead now (delivered, queued, sending, retrying, cancelled): replaying those could send twice. The
    record is reset to ``queued`` first, so the worker's no-double-send check lets this one resend through.
    """
    client = client or get_redis()
    entry = show(job_id, client=client)
    if entry is None:
        return False
    message = entry["message"]
    key = job_key(job_id)
    with client.pipeline() as pipe:
        # WATCH: a worker finishing the job between the check and the reset would abort the reset.
        pipe.watch(key)
        current, result = pipe.hmget(key, "status", "result")
        if result or (current is not None and current not in REPLAYABLE):
            state = "delivered" if result else current
            raise ReplayRefused(f"job {job_id} is {state}, not dead: not replayed (a replay could send it twice)")
        seconds, micros = pipe.time()  # Redis's clock, like every other score the sweeper compares
        now = seconds + micros / 1_000_000
        pipe.multi()
        pipe.hset(key, mapping={
            "id": job_id, "status": "queued", "kind": entry.get("kind") or "",
            "account": entry.get("account") or "", "recipient": entry.get("recipient") or "",
            "message": json.dumps(message, ensure_ascii=False), "failures": 0, "inflight": "",
            "updated_at": now, "created_at": now, "reason": "replayed from the DLQ",
        })
        pipe.hdel(key, "error", "result", "dead_at", "next_attempt_at", "slot_at")
        pipe.hsetnx(key, "attempts", len(entry.get("attempts") or []))
        pipe.hdel(DLQ_KEY, job_id)
        pipe.zrem(DLQ_INDEX_KEY, job_id)
        pipe.zadd(PENDING_KEY, {job_id: now})  # should the publish below fail, the sweeper sends it
        pipe.execute()
    app = get_app()
    with app.producer_or_acquire() as producer:
        publish(app, producer, job_id, message, priority=NEW_PRIORITY)
    return True


def purge(*, older_than: float | None = None, account: str | None = None,
          client: redis.Redis | None = None) -> int:
    """Delete entries (those dead more than ``older_than`` seconds ago, and of ``account`` if given)."""
    client = client or get_redis()
    cutoff = "+inf" if older_than is None else time.time() - older_than
    ids = client.zrangebyscore(DLQ_INDEX_KEY, "-inf", cutoff)
    if account is not None:
        ids = [e["id"] for e in list_entries(account=account, client=client) if e["id"] in set(ids)]
    if not ids:
        return 0
    pipe = client.pipeline()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        pipe.hdel(DLQ_KEY, *chunk)
        pipe.zrem(DLQ_INDEX_KEY, *chunk)
    pipe.execute()
    return len(ids)


def attempts_of(job_id: str, *, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    return [json.loads(a) for a in (client or get_redis()).lrange(attempts_key(job_id), 0, -1)]
