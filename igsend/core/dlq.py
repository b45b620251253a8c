"""The dead-letter queue as operators use it: list, show, replay and purge entries.

An entry keeps the job id, account, recipient, kind, the message (never a token), every attempt and the
final reason. Entries do not expire: an operator decides their fate. Jobs enter it through
:mod:`igsend.core.records` (the record's owner), which also reopens a job for a replay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from igsend.core import records
from igsend.core.celery_app import NEW_PRIORITY, get_app, publish
from igsend.core.errors import ReplayRefused
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
    return purge_ids(list(matching_ids(Filter(account=account, older_than=older_than), client=client)),
                     client=client)


def purge_ids(ids: list[str], *, client: redis.Redis | None = None) -> int:
    """Delete these entries (and the records kept for them); returns how many there were."""
    client = client or get_redis()
    ids = [job_id for job_id, score in zip(ids, _scores(client, ids), strict=True) if score is not None]
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


def _scores(client: redis.Redis, ids: list[str]) -> list[float | None]:
    scores: list[float | None] = []
    for start in range(0, len(ids), 1000):
        scores += client.zmscore(DLQ_INDEX_KEY, ids[start:start + 1000])
    return scores


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
    conversation = holds_conversation(job_id, client=client)
    if conversation is None:
        raise LookupError(f"job {job_id} holds no ordered conversation")
    records.release(client, conversation, job_id)
    head = cast(list[str], client.zrange(conversation, 0, 0))
    return head[0] if head else ""



def holds_conversation(job_id: str, *, client: redis.Redis | None = None) -> str | None:
    """The ordered conversation this job holds (it is still in it: IGSEND_ORDERED_DEAD=hold), or None."""
    client = client or get_redis()
    conversation = cast(str | None, client.hget(job_key(job_id), "conversation"))
    return conversation if conversation and client.zscore(conversation, job_id) is not None else None


def size(*, client: redis.Redis | None = None) -> int:
    """How many entries the dead-letter queue holds (``igsend dlq purge`` asks before deleting them all)."""
    return (client or get_redis()).zcard(DLQ_INDEX_KEY)


# --- filtering and paging (the console, ``igsend dlq``) ---------------------------------------------------------

def reason_class(entry: dict[str, Any]) -> str:
    """What kind of death an entry is, in one word: the error's class (``permanent``, ``account_broken``,
    ``unknown``, ``throttled``, ``transient``, ...) when Meta answered, else the reason's first words (``invalid
    message``, ``window closed``, ...)."""
    error = entry.get("error") or {}
    if error.get("class"):
        return str(error["class"])
    if entry.get("status") == "unknown":
        return "unknown"
    return str(entry.get("reason") or "").split(":", 1)[0].strip()


@dataclass(frozen=True)
class Filter:
    """Which entries: of ``account``, of reason class ``reason`` (:func:`reason_class`), of Graph error ``code``,
    dead more than ``older_than`` seconds ago. Empty fields match everything."""

    account: str | None = None
    reason: str | None = None
    code: int | None = None
    older_than: float | None = None

    @property
    def reads_entries(self) -> bool:
        """Whether matching needs each entry's content (the age is the index's own score)."""
        return bool(self.account or self.reason or self.code is not None)

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.account and entry.get("account") != self.account:
            return False
        if self.reason and reason_class(entry) != self.reason:
            return False
        return self.code is None or (entry.get("error") or {}).get("code") == self.code

    def newest_rank(self, client: redis.Redis) -> int:
        """The rank (newest first) of the first entry old enough: the entries newer than the cutoff come first."""
        if self.older_than is None:
            return 0
        return int(client.zcount(DLQ_INDEX_KEY, f"({time.time() - self.older_than}", "+inf"))


@dataclass
class Page:
    entries: list[dict[str, Any]]
    #: where the next page starts (a rank in the index, newest first), None at the end
    next_start: int | None
    #: entries read to fill this page (more than its length when a filter skipped some)
    scanned: int
    #: entries in the index from the age cutoff on (every one, when the filter reads no content)
    candidates: int
    ranks: list[int] = field(default_factory=list)


def page(flt: Filter, *, start: int = 0, size: int = 50, scan_limit: int = 5000,
         client: redis.Redis | None = None) -> Page:
    """One page of entries, newest death first, from rank ``start`` of the index on.

    The index is a sorted set scored by the time of death, so the age cutoff is a rank (ZCOUNT) and a deep page
    costs O(log N) like the first (ZREVRANGE by rank). A filter on the content reads entries in chunks from there
    until the page is full or ``scan_limit`` entries were read: a page stays fast however rare its matches, and
    ``next_start`` goes on where it stopped."""
    client = client or get_redis()
    first = max(start, flt.newest_rank(client))
    total = int(client.zcard(DLQ_INDEX_KEY))
    entries: list[dict[str, Any]] = []
    ranks: list[int] = []
    position = first
    chunk_size = size if not flt.reads_entries else 500
    while len(entries) < size and position < total and position - first < scan_limit:
        ids = cast(list[str], client.zrevrange(DLQ_INDEX_KEY, position, position + chunk_size - 1))
        if not ids:
            break
        for offset, raw in enumerate(cast(list[str | None], client.hmget(DLQ_KEY, ids))):
            if raw is None:
                continue
            entry = json.loads(raw)
            if flt.matches(entry):
                entries.append(entry)
                ranks.append(position + offset)
                if len(entries) == size:
                    position += offset + 1
                    break
        else:
            position += len(ids)
    next_start = position if position < total else None
    return Page(entries, next_start, position - first, total - flt.newest_rank(client), ranks)


def matching_ids(flt: Filter, *, client: redis.Redis | None = None) -> Iterator[str]:
    """The ids of every entry the filter matches, newest first, read in chunks (for "all that match")."""
    client = client or get_redis()
    cutoff = "+inf" if flt.older_than is None else f"({time.time() - flt.older_than}"
    ids = cast(list[str], client.zrevrangebyscore(DLQ_INDEX_KEY, cutoff, "-inf"))
    if not flt.reads_entries:
        yield from ids
        return
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for job_id, raw in zip(chunk, cast(list[str | None], client.hmget(DLQ_KEY, chunk)), strict=True):
            if raw is not None and flt.matches(json.loads(raw)):
                yield job_id


@dataclass
class ReplayResult:
    replayed: list[str] = field(default_factory=list)
    #: job id -> why it was not replayed (its record says it is not dead now)
    refused: dict[str, str] = field(default_factory=dict)
    #: ids not tried because the time budget ran out
    left: int = 0


def replay_many(ids: list[str], *, budget: float | None = None, client: redis.Redis | None = None) -> ReplayResult:
    """Replay each entry (:func:`replay`); one that is not dead must not stop the others. With ``budget`` seconds,
    stop when they are spent and count the ids left (a web request must answer before its server's timeout)."""
    client = client or get_redis()
    result = ReplayResult()
    deadline = None if budget is None else time.monotonic() + budget
    for index, job_id in enumerate(ids):
        if deadline is not None and time.monotonic() > deadline:
            result.left = len(ids) - index
            break
        try:
            if replay(job_id, client=client):  # False: gone meanwhile (replayed or purged by someone else)
                result.replayed.append(job_id)
        except ReplayRefused as exc:
            result.refused[job_id] = str(exc)
    return result
