"""The dead-letter queue as operators use it: list, show, replay and purge entries.

An entry keeps the job id, account, recipient, kind, the message (never a token), every attempt and the
final reason. Entries do not expire: an operator decides their fate. Jobs enter it through
:mod:`igsend.core.records` (the record's owner), which also reopens a job for a replay.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from igsend.core import records
from igsend.core.celery_app import NEW_PRIORITY, get_app, publish
from igsend.core.store import DLQ_INDEX_KEY, DLQ_KEY, attempts_key, get_redis, job_key


def list_entries(*, account: str | None = None, limit: int | None = None,
                 client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Entries, oldest death first."""
    client = client or get_redis()
    ids = cast(list[str], client.zrange(DLQ_INDEX_KEY, 0, -1))
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
    records.reopen(client, entry)
    app = get_app()
    with app.producer_or_acquire() as producer:
        publish(app, producer, job_id, message, priority=NEW_PRIORITY)
    return True


def purge(*, older_than: float | None = None, account: str | None = None,
          client: redis.Redis | None = None) -> int:
    """Delete entries (those dead more than ``older_than`` seconds ago, and of ``account`` if given)."""
    client = client or get_redis()
    cutoff = "+inf" if older_than is None else time.time() - older_than
    ids = cast(list[str], client.zrangebyscore(DLQ_INDEX_KEY, "-inf", cutoff))
    if account is not None:
        old = set(ids)
        ids = [e["id"] for e in list_entries(account=account, client=client) if e["id"] in old]
    if not ids:
        return 0
    # a dead message holding its ordered conversation (IGSEND_ORDERED_DEAD=hold) lets it go on without it
    holds = [(i, c) for i, c in zip(ids, _conversations(client, ids), strict=True) if c]
    pipe = client.pipeline()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        pipe.hdel(DLQ_KEY, *chunk)
        pipe.zrem(DLQ_INDEX_KEY, *chunk)
        # the dead job's record was kept for its entry; it goes with it (a replayed one is no longer dead)
        pipe.delete(*[job_key(i) for i in chunk], *[attempts_key(i) for i in chunk])
    for job_id, conversation in holds:
        records.release(client, conversation, job_id, pipe=pipe)
    pipe.execute()
    return len(ids)


def _conversations(client: redis.Redis, ids: list[str]) -> list[str | None]:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(job_id), "conversation")
    return cast(list[str | None], pipe.execute())


def release(job_id: str, *, client: redis.Redis | None = None) -> str:
    """Let the ordered conversation a dead message holds (``IGSEND_ORDERED_DEAD=hold``) go on without it: the
    next message is sent. Returns the job now at the head of the conversation ('' when none waits). Raises
    LookupError when the job holds no conversation. ``igsend dlq replay`` resumes it the other way, by sending
    the dead message again first."""
    client = client or get_redis()
    conversation = cast(str | None, client.hget(job_key(job_id), "conversation"))
    if not conversation or client.zscore(conversation, job_id) is None:
        raise LookupError(f"job {job_id} holds no ordered conversation")
    records.release(client, conversation, job_id)
    head = cast(list[str], client.zrange(conversation, 0, 0))
    return head[0] if head else ""



def size(*, client: redis.Redis | None = None) -> int:
    """How many entries the dead-letter queue holds (``igsend dlq purge`` asks before deleting them all)."""
    return (client or get_redis()).zcard(DLQ_INDEX_KEY)
