"""Finds the messages the broker lost and publishes them again: the job record is the source of truth.

Celery's Redis transport takes a message off its list with one command (BRPOP) and records it as
unacknowledged with another (celery#7950, celery#4354, kombu#305): a worker killed between the two, or a Redis
that goes away between them, loses the message for good, and its job would stay ``queued`` forever.

igsend indexes what it expects the broker to hold: ``igsend:pending`` (published, not yet admitted; scored by
the publish time) and ``igsend:inflight`` (admitted; scored by when the job's lock expires). Without reading
the backlog, the broker's order says which pending jobs cannot still be queued: each queue list is FIFO, so a
job published before the oldest message still waiting in every list has been taken off the queue. Taken means
in a worker's hands (the ``unacked`` hash, bounded by the workers' prefetch) or lost. A pass costs a few
commands however deep the backlog; only the handful of jobs older than the queue's oldest are looked at.

A lost job is published again; the admission and lock rules decide, as for any redelivery, so a second copy
never sends twice. Its attempt log and ``igsend:stats`` (``republished_total``) record it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from igsend.core import chunks, records
from igsend.core.celery_app import DUE_PRIORITY, get_app, publish, queue_keys
from igsend.core.settings import get_settings
from igsend.core.store import INFLIGHT_KEY, PENDING_KEY, PREFIX, STATS_KEY, get_redis, job_key, lock_key

log = logging.getLogger("igsend.sweeper")

MOVING_KEY = f"{PREFIX}moving"
#: kombu's Redis transport keeps messages taken but not acknowledged in this hash (default key names).
UNACKED_KEY = "unacked"
REPUBLISHED = "republished: message lost by the broker"
#: Statuses of a job that is still owed a send; anything else (final, cancelled, expired) is dropped from the index.
#: A ``scheduled`` one is in the index only once the scheduler found it due and published it (claim_due.lua;
#: admission, which ends that status, takes it out): its message lost, it is owed like any other.
_OWED = ("queued", "scheduled", "retrying", "sending")


@dataclass(frozen=True)
class SweepResult:
    republished: list[str]
    candidates: int
    cutoff: float


class Sweeper:
    """One pass at a time, run by the scheduler's leader. Keyword option ``lost_after`` (seconds, default 60):
    how long a published job may be missing from the broker before it is republished (a lost message is sent
    within ``lost_after`` plus one sweep interval); ``batch`` caps the jobs examined per pass."""

    def __init__(self, client: redis.Redis | None = None, *, lost_after: float = 60.0, batch: int = 500):
        self.client = client or get_redis()
        self.lost_after = lost_after
        self.batch = batch

    def _now(self) -> float:
        seconds, micros = self.client.time()
        return seconds + micros / 1_000_000

    def _oldest_queued(self, now: float) -> float:
        """Publish time of the oldest igsend message still waiting in any queue list (``now`` if none)."""
        keys = queue_keys()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.lindex(key, -1)  # kombu LPUSHes and BRPOPs: the right end is the oldest
        tails = [raw for raw in pipe.execute() if raw]
        # a chunk (igsend.core.chunks) stands for its jobs, handed out in its order: its first is its oldest
        ids = [job_id for raw in tails for job_id in _job_ids(raw)[:1]]
        if not ids:
            return now
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.zscore(PENDING_KEY, job_id)
        scores: list[float | None] = pipe.execute()
        # A raw publish (or a message republished out of order) has no score here: assume it just arrived and
        # fall back on the age rule alone.
        return min([now, *(score for score in scores if score is not None)])

    def sweep(self) -> SweepResult:
        now = self._now()
        cutoff = min(self._oldest_queued(now), now) - self.lost_after
        # exclusive: the oldest queued message itself sits at the cutoff
        pending = self.client.zrangebyscore(PENDING_KEY, "-inf", f"({cutoff}", start=0, num=self.batch)
        expired = self.client.zrangebyscore(INFLIGHT_KEY, "-inf", now - self.lost_after, start=0, num=self.batch)
        candidates = list(dict.fromkeys([*pending, *expired]))
        if not candidates:
            return SweepResult([], 0, cutoff)
        taken = self._in_workers_hands()
        pipe = self.client.pipeline(transaction=False)
        for job_id in candidates:
            pipe.hmget(job_key(job_id), "status", "message", "inflight")
            pipe.exists(lock_key(job_id))
        replies = pipe.execute()
        lost, stale = [], []
        for index, job_id in enumerate(candidates):
            (status, message, inflight), locked = replies[2 * index], replies[2 * index + 1]
            if job_id in taken or locked:
                continue  # a worker has it (or kombu will restore it from unacked)
            if status not in _OWED or not message or (status == "sending" and not inflight):
                stale.append(job_id)
            else:
                lost.append((job_id, json.loads(message)))
        if stale:
            self._forget(stale)
        if lost:
            self._republish(lost, now)
        return SweepResult([job_id for job_id, _ in lost], len(candidates), cutoff)

    def _in_workers_hands(self) -> set[str]:
        ids = set()
        for raw in self.client.hvals(UNACKED_KEY):
            try:
                ids.update(chunks.job_ids_in(json.loads(raw)[0]))
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        return ids

    def _forget(self, job_ids: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.zrem(PENDING_KEY, job_id)
            pipe.zrem(INFLIGHT_KEY, job_id)
        pipe.execute()

    def _republish(self, lost: list[tuple[str, dict[str, Any]]], now: float) -> None:
        # Index first: if this publish fails too, the next pass finds them again.
        pipe = self.client.pipeline(transaction=False)
        entry = {"outcome": "republished", "reason": REPUBLISHED, "at": now}
        ttl = get_settings().result_ttl
        for job_id, _ in lost:
            pipe.zadd(PENDING_KEY, {job_id: now})
            pipe.zrem(INFLIGHT_KEY, job_id)
            records.append_to_log(pipe, job_id, entry, ttl=ttl)
            pipe.lrem(MOVING_KEY, 0, job_id)
        pipe.hincrby(STATS_KEY, "republished_total", len(lost))
        pipe.execute()
        app = get_app()
        with app.producer_or_acquire() as producer:
            for job_id, message in lost:
                publish(app, producer, job_id, message, priority=DUE_PRIORITY)
        log.warning("republished %d job(s) the broker lost: %s", len(lost), ", ".join(j for j, _ in lost[:20]))



def _job_ids(raw: str) -> list[str]:
    try:
        return chunks.job_ids_in(json.loads(raw))
    except ValueError:
        return []
