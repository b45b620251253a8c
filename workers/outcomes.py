"""Writes what an attempt came to: the job record, its attempt log, the delay queue, the DLQ, the account.

Each write is one MULTI/EXEC transaction, so "sent, with Meta's message_id" lands together with the end of
the job's lock: a redelivered copy either sees the job in flight (and stands back) or sees it delivered.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from producers.store import (
    ACCOUNTS_INDEX_KEY,
    DELAYED_KEY,
    INFLIGHT_KEY,
    STATS_KEY,
    account_key,
    attempts_key,
    decode_record,
    held_key,
    job_key,
    lock_key,
)
from workers import breaker, dlq
from workers.errors import Verdict


class Recorder:
    def __init__(self, client: redis.Redis, *, record_ttl: int):
        self.client = client
        self.record_ttl = record_ttl

    def _begin(self, job_id: str, attempt_entry: dict[str, Any] | None) -> redis.client.Pipeline:
        pipe = self.client.pipeline()
        if attempt_entry is not None:
            pipe.rpush(attempts_key(job_id), json.dumps(attempt_entry, ensure_ascii=False))
            pipe.expire(attempts_key(job_id), self.record_ttl)
        return pipe

    def _end(self, pipe: redis.client.Pipeline, job_id: str) -> None:
        pipe.expire(job_key(job_id), self.record_ttl)
        pipe.delete(lock_key(job_id))
        pipe.zrem(INFLIGHT_KEY, job_id)  # the outcome is recorded: nothing left for the sweeper
        pipe.execute()

    def delivered(self, job_id: str, result: dict[str, Any], attempt_entry: dict[str, Any], *,
                  account: str) -> None:
        now = time.time()
        pipe = self._begin(job_id, attempt_entry)
        pipe.delete(*breaker.reset_keys(account))  # a delivery proves the account's setup works
        pipe.hset(job_key(job_id), mapping={"status": "delivered", "result": json.dumps(result), "inflight": "",
                                            "delivered_at": now, "updated_at": now})
        pipe.hdel(job_key(job_id), "error", "reason", "next_attempt_at")
        self._end(pipe, job_id)

    def retry(self, job_id: str, due: float, verdict: Verdict, attempt_entry: dict[str, Any] | None,
              *, count_failure: bool = True) -> None:
        pipe = self._begin(job_id, attempt_entry)
        pipe.hset(job_key(job_id), mapping={"status": "retrying", "next_attempt_at": due, "inflight": "",
                                            "reason": verdict.reason, "error": json.dumps(verdict.error()),
                                            "updated_at": time.time()})
        if count_failure:
            pipe.hincrby(job_key(job_id), "failures", 1)
        pipe.zadd(DELAYED_KEY, {job_id: due})
        self._end(pipe, job_id)

    def dead(self, job_id: str, reason: str, error: dict[str, Any] | None,
             attempt_entry: dict[str, Any] | None, *, status: str = "dead",
             defaults: dict[str, Any] | None = None) -> None:
        """Finish a job as dead (or ``unknown``) and file it in the DLQ with every attempt.

        ``defaults`` fills in the record of a job that has none (a malformed raw ``send_task``)."""
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(job_key(job_id))
        pipe.lrange(attempts_key(job_id), 0, -1)
        raw, previous = pipe.execute()
        record = decode_record(raw) or {"id": job_id, "created_at": now}
        record["status"] = status
        for field, value in (defaults or {}).items():
            record.setdefault(field, value)
        attempts = [json.loads(a) for a in previous] + ([attempt_entry] if attempt_entry else [])
        pipe = self._begin(job_id, attempt_entry)
        fields = {"status": status, "inflight": "", "reason": reason, "dead_at": now, "updated_at": now}
        if error:
            fields["error"] = json.dumps(error)
        if not raw:
            fields.update({"id": job_id, "created_at": now, "attempts": len(attempts),
                           "message": json.dumps(record.get("message"), ensure_ascii=False),
                           **{f: record.get(f) or "" for f in ("kind", "account", "recipient")}})
        pipe.hset(job_key(job_id), mapping=fields)
        pipe.hdel(job_key(job_id), "next_attempt_at", "slot_at")
        dlq.add(pipe, dlq.entry_for(record, attempts, reason, error, now))
        pipe.hincrby(STATS_KEY, f"{status}_total", 1)
        self._end(pipe, job_id)

    def record_attempt(self, job_id: str, attempt_entry: dict[str, Any]) -> None:
        pipe = self._begin(job_id, attempt_entry)
        pipe.execute()

    def hold(self, account: str, job_ids: list[str], reason: str) -> None:
        """Put jobs in the account's held set (out of the DLQ, if they were dead-lettered) until it is healed."""
        now = time.time()
        pipe = self.client.pipeline()
        for job_id in job_ids:
            pipe.hset(job_key(job_id), mapping={"status": "queued", "inflight": "", "reason": f"held: {reason}",
                                                "updated_at": now})
            pipe.hdel(job_key(job_id), "dead_at", "next_attempt_at", "slot_at")
            pipe.expire(job_key(job_id), self.record_ttl)
            pipe.delete(lock_key(job_id))
            pipe.zadd(held_key(account), {job_id: now})
            pipe.zrem(INFLIGHT_KEY, job_id)
            dlq.remove(pipe, job_id)
        pipe.execute()

    def release(self, job_id: str) -> None:
        """Let go of a job without an outcome (it was parked, held or deferred before any POST)."""
        self.client.delete(lock_key(job_id))

    def pause_account(self, account: str, until: float, reason: str) -> None:
        pipe = self.client.pipeline()
        pipe.hset(account_key(account), mapping={"paused_until": until, "pause_reason": reason})
        pipe.sadd(ACCOUNTS_INDEX_KEY, account)
        pipe.execute()

    def break_account(self, account: str, reason: str, error: dict[str, Any] | None) -> None:
        pipe = self.client.pipeline()
        pipe.hset(account_key(account), mapping={"health": "broken", "health_reason": reason,
                                                 "health_error": json.dumps(error), "broken_at": time.time()})
        pipe.sadd(ACCOUNTS_INDEX_KEY, account)
        pipe.execute()

    def slow_account(self, account: str, factor: float) -> None:
        """Remember the usage-driven slowdown for a minute; the next answers refresh or lift it."""
        key = account_key(account)
        if factor >= 1.0:
            self.client.hdel(key, "slowdown", "slowdown_until")
        else:
            pipe = self.client.pipeline()
            pipe.hset(key, mapping={"slowdown": f"{factor:.3f}", "slowdown_until": time.time() + 60})
            pipe.sadd(ACCOUNTS_INDEX_KEY, account)
            pipe.execute()

    def count(self, field: str, amount: int = 1) -> None:
        self.client.hincrby(STATS_KEY, field, amount)
