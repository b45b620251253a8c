"""The job record's one owner: its statuses, its fields, every transition, and its Lua scripts (``lua/``).

A job in progress is one Redis hash (``igsend:job:ID``) plus its attempt log (``igsend:job:ID:attempts``).
Producers create it, admission moves it to ``sending``, the worker records what Meta answered (``retrying``,
``dead``/``unknown``, or held for its account), operators replay or heal it, a revoke cancels it. A delivered
job shrinks to one small string (``igsend:done:ID``, ``lua/finish.lua``) kept for ``IGSEND_DELIVERED_TTL``; a
dead or unknown one keeps its hash as long as its DLQ entry. Every write of a job's status happens here (the
Lua scripts included), so the statuses and the fields each one carries can be read in one file.

Each outcome is one MULTI/EXEC transaction, so "sent, with Meta's message_id" lands together with the end of
the job's lock: a redelivered copy either sees the job in flight (and stands back) or sees it delivered.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script
from redis.typing import EncodableT

from igsend.core import sent, series
from igsend.core.errors import CancelRefused, IgsendError, ReplayRefused
from igsend.core.settings import get_settings
from igsend.core.store import (
    DELAYED_KEY,
    DLQ_INDEX_KEY,
    DLQ_KEY,
    INFLIGHT_KEY,
    OUTCOMES_KEY,
    PENDING_KEY,
    STATS_KEY,
    attempts_key,
    conversation_key,
    done_key,
    held_key,
    job_key,
    lock_key,
)

_LUA = Path(__file__).parent / "lua"


class JobStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"  # waiting for its send_at in igsend:delayed
    SENDING = "sending"
    RETRYING = "retrying"
    DELIVERED = "delivered"  # accepted by Meta with a message id (Instagram has no delivery receipts)
    DEAD = "dead"
    UNKNOWN = "unknown"  # the POST went out and its answer was lost; see docs/delivery.md "Delivery guarantees"
    CANCELLED = "cancelled"  # revoked before it was sent, or its publish failed and the caller was told so
    NOT_FOUND = "not_found"  # no record: a wrong id, or expired after IGSEND_RESULT_TTL

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({JobStatus.DELIVERED, JobStatus.DEAD, JobStatus.UNKNOWN, JobStatus.CANCELLED})
#: About how many entries the outcome stream (``igsend:outcomes``) keeps (XADD MAXLEN ~).
OUTCOMES_MAX = 10_000
#: Statuses an operator may replay from the DLQ.
REPLAYABLE = frozenset({JobStatus.DEAD, JobStatus.UNKNOWN})


def _json(value: Any) -> str:
    """``value`` as the JSON a record keeps: non-ASCII text as written (not as ``\\u`` escapes)."""
    return json.dumps(value, ensure_ascii=False)


def _batch(client: redis.Redis) -> redis.client.Pipeline:
    """A pipeline that sends its commands in one round trip, without MULTI: for reads, and for writes that need
    no transaction (the replies are the same either way)."""
    return client.pipeline(transaction=False)  # pragma: no mutate


@cache
def _source(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


def script(client: redis.Redis, name: str) -> Script:
    """One of the record's Lua scripts (``create_job``, ``admit``, ``cancel``, ``claim_due``, ``release``) on
    ``client``."""
    return client.register_script(_source(name))


COMMENT_PREFIX = "comment:"


def recipient_of(message: dict[str, Any]) -> str:
    """Who a validated message goes to, for records, logs and metrics: the IGSID, or the comment a private reply
    answers (``comment:ID``)."""
    return str(message["recipient"]) if "recipient" in message else f"{COMMENT_PREFIX}{message['comment_id']}"


#: A ``send_at`` closer than this is sent now: scheduling it would only add the scheduler's round trip.
SCHEDULE_AFTER = 0.5


def scheduled_for(message: dict[str, Any], now: float) -> float | None:
    """When a message is due, if it must wait for its ``send_at``; None to send it now."""
    send_at = message.get("send_at")
    return float(send_at) if send_at is not None and float(send_at) > now + SCHEDULE_AFTER else None


def new_record(job_id: str, message: dict[str, Any], *, idempotency_key: str | None, now: float) -> dict[str, Any]:
    """The fields of a job a producer has just accepted: ``queued``, or ``scheduled`` until its ``send_at``."""
    due = scheduled_for(message, now)
    record = {"id": job_id, "status": JobStatus.QUEUED.value, "kind": message["kind"], "account": message["account"],
              "recipient": recipient_of(message), "message": _json(message), "attempts": 0,
              "created_at": now, "updated_at": now, "idempotency_key": idempotency_key or ""}
    if due is not None:
        record |= {"status": JobStatus.SCHEDULED.value, "next_attempt_at": due}
    if message.get("ordered"):
        record["conversation"] = conversation_of(message)
    if message.get("priority") == "bulk":
        record["priority"] = "bulk"  # its account's lane hands it out after the normal ones (lua/create_job.lua)
    return record


def conversation_of(message: dict[str, Any]) -> str | None:
    """The conversation key of an ordered message (its account and recipient), None for one that is not."""
    return conversation_key(message["account"], recipient_of(message)) if message.get("ordered") else None


def release(client: redis.Redis, conversation: str, job_id: str, *, pipe: redis.client.Pipeline | None = None) -> None:
    """``job_id`` is done with: the next job of its ordered conversation may go (lua/release.lua); in ``pipe``
    when given, so it is atomic with the outcome that ends the job."""
    script(client, "release")(keys=[conversation, DELAYED_KEY], args=[job_id, job_key("")], client=pipe or client)


#: What a caller may still cancel: nothing of it has gone to Meta.
CANCELLABLE = frozenset({"queued", "scheduled", "retrying"})


def cancel(client: redis.Redis, job_id: str, *, reason: str, record_ttl: int, create: bool = False) -> str:
    """Cancel a job that has not started sending: it ends ``cancelled`` and is never POSTed, even from a copy in a
    worker's prefetch (admission reads the status). Returns the status it had; raises CancelRefused for a job that
    is sending or final, LookupError for an id with no record (unless ``create``: a raw client's message no worker
    has taken yet gets a cancelled record)."""
    before = script(client, "cancel")(keys=[job_key(job_id), PENDING_KEY, done_key(job_id), DELAYED_KEY, OUTCOMES_KEY],
                                      args=[job_id, reason, time.time(), record_ttl, int(not create),
                                            OUTCOMES_MAX])
    if before == "missing":
        raise LookupError(f"no job {job_id}")
    if before not in CANCELLABLE and before != "":
        raise CancelRefused(job_id, str(before))
    return str(before)


def waiting(client: redis.Redis, *, start: int = 0, count: int = 50) -> tuple[list[dict[str, Any]], int]:
    """Jobs waiting in ``igsend:delayed`` (scheduled for their ``send_at``, or retrying), soonest due first, from
    rank ``start``: each record (without its message) with ``due_at``; and how many wait in all."""
    pairs: list[tuple[str, float]] = [*client.zrange(DELAYED_KEY, start, start + count - 1, withscores=True)]
    pipe = _batch(client)
    pipe.zcard(DELAYED_KEY)
    for job_id, _ in pairs:
        pipe.hgetall(job_key(job_id))
    total, *raws = pipe.execute()  # one hash per id
    jobs = []
    for index, (job_id, due) in enumerate(pairs):
        record = decode(raws[index]) or {"id": job_id, "status": None}
        record.pop("message", None)
        jobs.append({**record, "due_at": due})
    return jobs, int(total)


def decode(raw: dict[str, str]) -> dict[str, Any]:
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
        "read_at": None,  # only a delivered message is read
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


def decode_done(job_id: str, raw: str) -> dict[str, Any]:
    """A delivered job's compact document (``lua/finish.lua``) as the same status JSON as any other job."""
    doc = json.loads(raw)
    message_id = sent.expand_message_id(doc.get("mi"))
    result = {"recipient_id": doc.get("ri") or doc.get("r"), **({"message_id": message_id} if message_id else {})}
    if "d" not in doc:  # written since 2026-12: the delivery as milliseconds after the creation
        doc["d"] = round(doc["c"] + doc.get("e", 0) / 1000, 4)
    if str(doc.get("r")).startswith(COMMENT_PREFIX):  # a private reply: the comment it answered
        result["comment_id"] = doc["r"].removeprefix(COMMENT_PREFIX)
    log = doc.get("l") or [{"attempt": doc.get("n", 1), "at": doc["d"] - (doc.get("ms") or 0) / 1000,
                            "latency_ms": doc.get("ms"), "outcome": "delivered"}]
    return {"id": job_id, "status": JobStatus.DELIVERED.value, "kind": doc.get("k"), "account": doc.get("a"),
            "recipient": doc.get("r"), "attempts": doc.get("n", 1), "created_at": doc.get("c"),
            "updated_at": doc.get("d"), "result": result, "delivered_at": doc.get("d"), "attempt_log": log,
            "read_at": iso_time(doc["rd"]) if doc.get("rd") else None}


def iso_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the millisecond (``2026-12-06T10:00:00.123Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mark_read(client: redis.Redis, job_id: str, at: float, *, pipe: redis.client.Pipeline | None = None) -> None:
    """A read receipt (``messaging_seen``) for a delivered job: its record gains ``read_at`` (the first receipt's
    time); the status stays ``delivered``. Nothing happens for a job without a delivered record. With ``pipe``,
    the step is queued on it."""
    script(client, "read")(keys=[done_key(job_id)], args=[at], client=pipe or client)


def read(client: redis.Redis, job_id: str) -> dict[str, Any]:
    """The decoded record with its attempt log, or ``{}`` when there is none."""
    pipe = _batch(client)
    pipe.hgetall(job_key(job_id))
    pipe.lrange(attempts_key(job_id), 0, -1)
    pipe.get(done_key(job_id))
    raw, attempts, done = pipe.execute()
    if done:
        return decode_done(job_id, done)
    record = decode(raw)
    if record:
        record["attempt_log"] = [json.loads(a) for a in attempts]
    return record


def status_of(client: redis.Redis, job_id: str) -> JobStatus:
    """The job's status in one round trip (``NOT_FOUND`` for no record)."""
    pipe = _batch(client)
    pipe.hget(job_key(job_id), "status")
    pipe.exists(done_key(job_id))
    value, done = pipe.execute()
    if done:
        return JobStatus.DELIVERED
    return JobStatus(value) if value else JobStatus.NOT_FOUND


def statuses(client: redis.Redis, job_ids: list[str]) -> list[JobStatus]:
    """Many jobs' statuses in pipelined round trips (for following a batch)."""
    found: list[JobStatus] = []
    for start in range(0, len(job_ids), 1000):
        pipe = _batch(client)
        chunk = job_ids[start:start + 1000]
        for job_id in chunk:
            pipe.hget(job_key(job_id), "status")
            pipe.exists(done_key(job_id))
        replies = pipe.execute()
        for index in range(len(chunk)):
            value, done = replies[2 * index], replies[2 * index + 1]
            found.append(JobStatus.DELIVERED if done else JobStatus(value) if value else JobStatus.NOT_FOUND)
    return found


def exists(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(job_key(job_id), done_key(job_id)))


def discard(client: redis.Redis, job_ids: list[str], idempotency_keys: list[str]) -> None:
    """Take back records a failed call created (no command here needs memory: they work on a full Redis)."""
    pipe = _batch(client)
    for job_id in job_ids:
        pipe.delete(job_key(job_id))
        pipe.zrem(PENDING_KEY, job_id)
        pipe.zrem(DELAYED_KEY, job_id)
    if idempotency_keys:
        pipe.delete(*idempotency_keys)
    pipe.execute()


def abandon(client: redis.Redis, job_ids: list[str], reason: str) -> None:
    """Cancel records whose publish failed: should the message reach a worker after all, it is refused. Each end
    goes on the outcome stream right after its status (what igsend.core.waiting wakes on)."""
    pipe = _batch(client)
    for job_id in job_ids:
        pipe.hmget(job_key(job_id), "account", "kind")
    found: list[list[str | None]] = pipe.execute()  # one reply per id
    now = time.time()
    pipe = _batch(client)
    for index, job_id in enumerate(job_ids):
        account, kind = found[index]
        pipe.hset(job_key(job_id), mapping={"status": JobStatus.CANCELLED.value, "reason": reason})
        if account is None:  # no record (a delivered job keeps only its compact one): no end to announce
            continue
        pipe.xadd(OUTCOMES_KEY, {"id": job_id, "status": JobStatus.CANCELLED.value, "account": account or "",
                                 "kind": kind or "", "message_id": "", "at": now},
                  maxlen=OUTCOMES_MAX)  # MAXLEN ~ (redis-py's default: approximate)
    pipe.execute()


def reopen(client: redis.Redis, entry: dict[str, Any]) -> None:
    """Put a dead-lettered job back to ``queued`` for a replay, and take it out of the DLQ, atomically.

    Raises :class:`ReplayRefused` when the record says it is not dead now (delivered, queued, sending,
    retrying, cancelled): replaying those could send twice."""
    job_id = entry["id"]
    key = job_key(job_id)
    with client.pipeline() as pipe:
        # WATCH: a worker finishing the job between the check and the reset would abort the reset.
        pipe.watch(key, done_key(job_id))
        found: list[Any] = [*pipe.hmget(key, "status", "result")]  # run at once (WATCH mode)
        current, result = found
        delivered = bool(result) or bool(pipe.exists(done_key(job_id)))  # its result, or its compact record
        if delivered or (current is not None and current not in REPLAYABLE):
            state = "delivered" if delivered else current
            raise ReplayRefused(f"job {job_id} is {state}, not dead: not replayed (a replay could send it twice)")
        seconds, micros = pipe.time()  # Redis's clock, like every other score the sweeper compares
        now = seconds + micros / 1_000_000
        pipe.multi()
        pipe.hset(key, mapping={
            "id": job_id, "status": JobStatus.QUEUED.value, "kind": entry.get("kind") or "",
            "account": entry.get("account") or "", "recipient": entry.get("recipient") or "",
            "message": _json(entry["message"]), "failures": 0, "inflight": "",
            "updated_at": now, "created_at": now, "reason": "replayed from the DLQ",
        })
        pipe.hdel(key, "error", "result", "dead_at", "next_attempt_at", "slot_at", "resent", "inflight_at",
                  "lost_answer")
        pipe.hsetnx(key, "attempts", len(entry.get("attempts") or []))
        _remove_dead_letter(pipe, job_id)
        pipe.zadd(PENDING_KEY, {job_id: now})  # should the publish that follows fail, the sweeper sends it
        pipe.execute()


def _dead_letter(record: dict[str, Any], attempts: list[dict[str, Any]], reason: str,
              error: dict[str, Any] | None, now: float) -> dict[str, Any]:
    return {
        "id": record["id"], "account": record.get("account"), "recipient": record.get("recipient"),
        "kind": record.get("kind"), "status": record.get("status"), "message": record.get("message"),
        "reason": reason, "error": error, "attempts": attempts, "dead_at": now,
    }


def _file_dead_letter(pipe: redis.client.Pipeline, entry: dict[str, Any]) -> None:
    pipe.hset(DLQ_KEY, entry["id"], _json(entry))
    pipe.zadd(DLQ_INDEX_KEY, {entry["id"]: entry["dead_at"]})


def _remove_dead_letter(pipe: redis.client.Pipeline, job_id: str) -> None:
    pipe.hdel(DLQ_KEY, job_id)
    pipe.zrem(DLQ_INDEX_KEY, job_id)



def append_to_log(pipe: redis.client.Pipeline, job_id: str, entry: dict[str, Any], *, ttl: int) -> None:
    """One entry in the job's attempt log (a POST, or an event such as a republish), kept as long as the job."""
    pipe.rpush(attempts_key(job_id), _json(entry))
    pipe.expire(attempts_key(job_id), ttl)


def archive_oldest(client: redis.Redis, count: int, path: str) -> int:
    """Move the ``count`` oldest DLQ entries (and their records) to the end of the JSON-lines file ``path``.

    ZPOPMIN is atomic, so two workers never archive the same entry. Entries are deleted only after their lines
    are written; if the file cannot be written they go back in the index and the error is raised."""
    popped: list[tuple[str, float]] = [*client.zpopmin(DLQ_INDEX_KEY, count)]
    if not popped:
        return 0
    ids = [job_id for job_id, _ in popped]
    entries: list[Any] = client.hmget(DLQ_KEY, ids)
    try:
        with open(path, "ab") as archive:  # UTF-8, whatever the locale
            for raw in entries:
                if raw:
                    archive.write(raw.encode() + b"\n")
    except OSError:
        client.zadd(DLQ_INDEX_KEY, dict(popped))
        raise
    pipe = _batch(client)
    pipe.hdel(DLQ_KEY, *ids)
    pipe.delete(*[job_key(i) for i in ids], *[attempts_key(i) for i in ids])
    pipe.execute()
    return len(ids)


class NotReplicated(IgsendError):
    """Fewer replicas than IGSEND_REDIS_REPLICA_ACKS confirmed a write within IGSEND_REDIS_REPLICA_TIMEOUT: it is
    on the primary only, and a failover now could lose it."""


def wait_for_replicas(pipe: redis.client.Pipeline, replicas: int, timeout: float) -> None:
    """Queue ``WAIT replicas timeout`` on ``pipe``: Redis answers once that many replicas hold every write this
    connection made (and so everything before them in the replication stream), or at the timeout."""
    pipe.execute_command("WAIT", replicas, max(1, round(timeout * 1000)))


def check_replicas(confirmed: int, wanted: int, timeout: float, what: str) -> None:
    if int(confirmed) < wanted:
        raise NotReplicated(f"{what}: {confirmed} of the {wanted} replica(s) IGSEND_REDIS_REPLICA_ACKS asks for "
                            f"confirmed it within {timeout:g} s")


class Outcomes:
    """Records what an attempt came to. Keyword options: ``record_ttl`` (seconds a job in progress stays
    readable), ``delivered_ttl`` (seconds a delivered job's compact record stays, default a day),
    ``stream_max`` (about how many finished jobs the outcome stream keeps, default 10,000), ``dlq_max`` and
    ``dlq_archive`` (beyond ``dlq_max`` entries, the oldest move to the JSON-lines file ``dlq_archive``; without
    a file nothing is dropped)."""

    def __init__(self, client: redis.Redis, *, record_ttl: int, delivered_ttl: int = 24 * 3600,
                 stream_max: int = OUTCOMES_MAX, dlq_max: int = 10_000, dlq_archive: str | None = None,
                 replica_acks: int | None = None, replica_timeout: float | None = None):
        self.client = client
        self.record_ttl = record_ttl
        self.delivered_ttl = delivered_ttl
        self.stream_max = stream_max
        self.dlq_max = dlq_max
        self.dlq_archive = dlq_archive
        settings = get_settings()
        #: IGSEND_REDIS_REPLICA_ACKS: replicas that must hold the delivered record before the task returns (and
        #: Celery acknowledges the message); 0 sends no WAIT.
        self.replica_acks = settings.replica_acks if replica_acks is None else replica_acks
        self.replica_timeout = settings.replica_timeout if replica_timeout is None else replica_timeout
        self._finish = script(client, "finish")

    def _begin(self, job_id: str, attempt_entry: dict[str, Any] | None) -> redis.client.Pipeline:
        pipe = self.client.pipeline()
        if attempt_entry is not None:
            append_to_log(pipe, job_id, attempt_entry, ttl=self.record_ttl)
        return pipe

    def _begin_fenced(self, job_id: str, attempt_entry: dict[str, Any] | None) -> redis.client.Pipeline | None:
        """``_begin`` for the outcome of ``attempt_entry``'s attempt, or None when that attempt is no longer the
        job's attempt in flight: its worker stalled past its lock, and admission classified the attempt lost and
        let another copy POST (or the job ended meanwhile). Such a late outcome must not end the attempt that
        replaced it: it would free that POST's lock while it is live, and a third copy would POST. The transaction
        fails (WatchError) should the job change before it runs."""
        entry: dict[str, Any] = attempt_entry or {}
        attempt = entry.get("attempt")
        if attempt is None:
            return self._begin(job_id, attempt_entry)
        pipe = self.client.pipeline()
        pipe.watch(job_key(job_id), done_key(job_id))
        inflight = pipe.hget(job_key(job_id), "inflight")
        if pipe.exists(done_key(job_id)) or inflight != str(attempt):  # None: no attempt in flight
            pipe.reset()
            self.count("superseded_outcomes_total")
            return None
        pipe.multi()
        append_to_log(pipe, job_id, entry, ttl=self.record_ttl)
        return pipe

    def _end(self, pipe: redis.client.Pipeline, job_id: str) -> None:
        pipe.expire(job_key(job_id), self.record_ttl)
        pipe.delete(lock_key(job_id))
        pipe.zrem(INFLIGHT_KEY, job_id)  # the outcome is recorded: nothing left for the sweeper
        pipe.execute()

    def delivered(self, job_id: str, result: dict[str, Any], attempt_entry: dict[str, Any], *,
                  forget: list[str] | None = None, conversation: str | None = None,
                  account: str | None = None) -> None:
        """Meta accepted it: the job shrinks to its compact record (one key), atomically with the end of its
        lock. ``forget``: keys to delete in the same step (e.g. the account's circuit breaker); ``conversation``:
        an ordered job's, whose next job may then go (in the same transaction); ``account``: the sending
        account, under which Meta's message id leads back to the job (igsend/core/sent.py) for as long as the
        record lasts."""
        keys, args = self._finish_call(job_id, result, attempt_entry, account=account, forget=forget,
                                       now=time.time())
        if not self.replica_acks and conversation is None:
            self._finish(keys=keys, args=args)
            return
        # WAIT counts the writes of its own connection: one pipeline, so the script and the WAIT share one. The
        # release goes in the same write, so Redis runs it right after the script (a WAIT cannot sit in MULTI).
        pipe = self.client.pipeline(transaction=False)
        self._finish(keys=keys, args=args, client=pipe)
        if conversation is not None:
            release(self.client, conversation, job_id, pipe=pipe)
        if not self.replica_acks:
            pipe.execute()
            return
        wait_for_replicas(pipe, self.replica_acks, self.replica_timeout)
        check_replicas(pipe.execute()[-1], self.replica_acks, self.replica_timeout, f"job {job_id}'s delivered record")

    def _finish_call(self, job_id: str, result: dict[str, Any], attempt_entry: dict[str, Any], *,
                     account: str | None, forget: list[str] | None, now: float) -> tuple[list[str], list[Any]]:
        """lua/finish.lua's KEYS and ARGV for one delivered job."""
        message_id = result.get("message_id") or ""
        index = sent.sent_key(account, now) if account and message_id else sent.NO_INDEX_KEY
        charts = [series.series_key(account, now), series.series_key(series.EVERY_ACCOUNT, now)] if account \
            else [series.NO_SERIES_KEY, series.NO_SERIES_KEY]
        keys = [job_key(job_id), attempts_key(job_id), done_key(job_id), lock_key(job_id), INFLIGHT_KEY,
                OUTCOMES_KEY, DLQ_KEY, DLQ_INDEX_KEY, index, *charts, *(forget or [])]
        # finish.lua decodes the attempt entry (\u escapes or not, the same text) and reads the digest only with an
        # index (an account and a message id)
        args = [job_id, result["recipient_id"], message_id, json.dumps(attempt_entry), now,
                self.delivered_ttl, self.stream_max, sent.keep_seconds(self.delivered_ttl),
                sent.digest(message_id), sent.MESSAGE_ID_PREFIX, sent.compact_job_id(job_id),
                series.KEEP_SECONDS, series.offset(now, "delivered"), series.latency_offset(now, 0.0),
                *series.LATENCY_BOUNDS[:-1]]
        return keys, args

    def delivered_many(self, items: list[tuple[str, dict[str, Any], dict[str, Any]]], *, account: str,
                       forget: list[str] | None = None) -> None:
        """:meth:`delivered` for several jobs of ``account`` that are not ordered: ``(job id, result, attempt
        entry)`` each, one lua/finish.lua call each (its KEYS and ARGV as :meth:`delivered` passes them), in one
        pipelined round trip; ``forget`` goes with the last. With IGSEND_REDIS_REPLICA_ACKS, one WAIT after them."""
        now = time.time()
        calls = [self._finish_call(job_id, result, attempt_entry, account=account, now=now,
                                   forget=forget if position == len(items) - 1 else None)
                 for position, (job_id, result, attempt_entry) in enumerate(items)]
        while calls:
            # EVALSHA itself, not the Script through the pipeline: redis-py would ask SCRIPT EXISTS first, a round
            # trip more for each pipeline. A call Redis answers NOSCRIPT (its scripts lost to a restart, a failover
            # or SCRIPT FLUSH) ran nothing: it goes again once the script is loaded.
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._finish.sha, len(keys), *keys, *args)
            if self.replica_acks:
                wait_for_replicas(pipe, self.replica_acks, self.replica_timeout)
            replies = pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, Exception) and not isinstance(reply, redis.exceptions.NoScriptError):
                    raise reply
            if self.replica_acks:
                check_replicas(replies[-1], self.replica_acks, self.replica_timeout,
                               f"{len(calls)} delivered records")
            calls = [calls[index] for index, reply in enumerate(replies[:len(calls)])
                     if isinstance(reply, redis.exceptions.NoScriptError)]
            if calls:
                self.client.script_load(self._finish.script)

    def retry(self, job_id: str, due: float, *, reason: str, error: dict[str, Any],
              attempt_entry: dict[str, Any] | None, count_failure: bool = True,
              throttled_on: str | None = None) -> None:
        """The attempt failed and the job is due again at ``due``; nothing happens when the attempt is no longer
        the job's attempt in flight (``_begin``). ``throttled_on``: the account Meta throttled (counted in the
        console's charts, in the same step)."""
        while True:
            try:
                self._retry(job_id, due, reason=reason, error=error, attempt_entry=attempt_entry,
                            count_failure=count_failure, throttled_on=throttled_on)
                return
            except redis.WatchError:
                continue  # the job changed meanwhile: look again

    def _retry(self, job_id: str, due: float, *, reason: str, error: dict[str, Any],
               attempt_entry: dict[str, Any] | None, count_failure: bool, throttled_on: str | None) -> None:
        pipe = self._begin_fenced(job_id, attempt_entry)
        if pipe is None:
            return
        if throttled_on:
            series.count(pipe, throttled_on, "throttled", time.time())
        pipe.hset(job_key(job_id), mapping={"status": JobStatus.RETRYING.value, "next_attempt_at": due,
                                            "inflight": "", "reason": reason, "error": json.dumps(error),
                                            "updated_at": time.time()})
        if count_failure:
            pipe.hincrby(job_key(job_id), "failures")
        pipe.zadd(DELAYED_KEY, {job_id: due})
        self._end(pipe, job_id)

    def resend(self, job_id: str, *, reason: str, attempt_entry: dict[str, Any] | None) -> None:
        """Reconciliation found no trace at Meta of an attempt whose answer was lost: the job is due again now and
        goes through admission like any retry; ``resent`` marks that it had its one resend."""
        now = time.time()
        pipe = self._begin(job_id, attempt_entry)
        pipe.hset(job_key(job_id), mapping={"status": JobStatus.RETRYING.value, "next_attempt_at": now,
                                            "inflight": "", "reason": reason, "resent": 1, "updated_at": now})
        pipe.hincrby(job_key(job_id), "failures")
        pipe.zadd(DELAYED_KEY, {job_id: now})
        self._end(pipe, job_id)

    def defer_reconcile(self, job_id: str, due: float, *, reason: str, lost_answer: str, started: float,
                        attempt_entry: dict[str, Any] | None) -> None:
        """The reconciliation of a lost answer goes on at ``due`` (its horizon, or the next Conversations API slot)
        without holding a worker: the job waits in ``igsend:delayed`` still ``sending`` with its attempt in flight,
        so the copy the scheduler brings back is admitted only to reconcile (admission's ``orphaned``), never to
        POST. ``lost_answer``: how the answer was lost; ``started``: when the attempt began. Its in-flight entry
        is scored ``due``: the sweeper brings it back too should that copy be lost."""
        pipe = self._begin(job_id, attempt_entry)
        pipe.hset(job_key(job_id), mapping={"reason": reason, "lost_answer": lost_answer, "inflight_at": started,
                                            "updated_at": time.time()})
        pipe.zadd(DELAYED_KEY, {job_id: due})
        pipe.zadd(INFLIGHT_KEY, {job_id: due})
        pipe.delete(lock_key(job_id))
        pipe.execute()

    def unadmit(self, job_id: str, due: float, *, reason: str) -> None:
        """Take back an admission that must not POST (its replicas did not confirm it): the job is due again at
        ``due`` (the scheduler brings it back), its lock and in-flight mark gone, the attempt not counted."""
        pipe = self.client.pipeline()
        pipe.hset(job_key(job_id), mapping={"status": JobStatus.RETRYING.value, "next_attempt_at": due,
                                            "inflight": "", "reason": reason, "updated_at": time.time()})
        pipe.hincrby(job_key(job_id), "attempts", -1)
        pipe.hincrby(STATS_KEY, "unreplicated_admissions_total")
        pipe.zadd(DELAYED_KEY, {job_id: due})
        self._end(pipe, job_id)

    def failures(self, job_id: str) -> int:
        return int(self.client.hget(job_key(job_id), "failures") or 0)

    def forget_inflight(self, job_id: str) -> None:
        """Let an orphaned attempt go (``IGSEND_UNKNOWN_OUTCOME=resend``): the next admission may POST again."""
        self.client.hset(job_key(job_id), "inflight", "")

    def dead(self, job_id: str, reason: str, error: dict[str, Any] | None,
             attempt_entry: dict[str, Any] | None, *, status: JobStatus = JobStatus.DEAD,
             defaults: dict[str, Any] | None = None, conversation: str | None = None) -> None:
        """Finish a job as dead (or ``unknown``) and file it in the DLQ with every attempt.

        ``defaults`` fills in the record of a job that has none (a malformed raw ``send_task``); ``conversation``:
        an ordered job's, whose next job may then go (in the same step; leave it out to hold the conversation).
        Nothing happens when ``attempt_entry``'s attempt is no longer the job's attempt in flight (``_begin``)."""
        while True:
            try:
                self._dead(job_id, reason, error, attempt_entry, status=status, defaults=defaults,
                           conversation=conversation)
                return
            except redis.WatchError:
                continue  # the job changed meanwhile: look again

    def _dead(self, job_id: str, reason: str, error: dict[str, Any] | None,
              attempt_entry: dict[str, Any] | None, *, status: JobStatus, defaults: dict[str, Any] | None,
              conversation: str | None) -> None:
        now = time.time()
        pipe = _batch(self.client)
        pipe.hgetall(job_key(job_id))
        pipe.lrange(attempts_key(job_id), 0, -1)
        raw, previous = pipe.execute()
        record = decode(raw) or {"id": job_id}
        record["status"] = status.value
        for field, value in (defaults or {}).items():
            record.setdefault(field, value)
        attempts = [json.loads(a) for a in previous] + ([attempt_entry] if attempt_entry else [])
        fenced = self._begin_fenced(job_id, attempt_entry)
        if fenced is None:
            return
        pipe = fenced
        fields: dict[EncodableT, EncodableT]  # redis-py's hset(mapping=...) takes no narrower dict
        fields = {"status": status.value, "inflight": "", "reason": reason, "dead_at": now, "updated_at": now}
        if error:
            fields["error"] = json.dumps(error)
        if not raw:
            fields.update({"id": job_id, "created_at": now, "attempts": len(attempts),
                           "message": _json(record.get("message")),
                           **{f: record.get(f) or "" for f in ("kind", "account", "recipient")}})
        pipe.hset(job_key(job_id), mapping=fields)
        pipe.hdel(job_key(job_id), "next_attempt_at", "slot_at")
        _file_dead_letter(pipe, _dead_letter(record, attempts, reason, error, now))
        pipe.hincrby(STATS_KEY, f"{status.value}_total")
        if record.get("account"):
            series.count(pipe, record["account"], "dead", now)
        pipe.xadd(OUTCOMES_KEY, {"id": job_id, "status": status.value, "account": record.get("account") or "",
                                 "kind": record.get("kind") or "", "message_id": "", "at": now},
                  maxlen=self.stream_max)  # MAXLEN ~ (redis-py's default: approximate)
        pipe.delete(lock_key(job_id))
        pipe.zrem(INFLIGHT_KEY, job_id)
        if conversation is not None:
            release(self.client, conversation, job_id, pipe=pipe)
        # Kept as long as its DLQ entry: `dlq purge` (or the DLQ cap) removes both.
        pipe.persist(job_key(job_id))
        pipe.persist(attempts_key(job_id))
        pipe.zcard(DLQ_INDEX_KEY)
        size = pipe.execute()[-1]
        if self.dlq_archive and size > self.dlq_max:
            archive_oldest(self.client, size - self.dlq_max, self.dlq_archive)

    def record_attempt(self, job_id: str, attempt_entry: dict[str, Any]) -> None:
        self._begin(job_id, attempt_entry).execute()

    def hold(self, account: str, job_ids: list[str], reason: str) -> None:
        """Put jobs in the account's held set (out of the DLQ, if they were dead-lettered) until it is healed."""
        now = time.time()
        pipe = self.client.pipeline()
        for job_id in job_ids:
            pipe.hset(job_key(job_id), mapping={"status": JobStatus.QUEUED.value, "inflight": "",
                                                "reason": f"held: {reason}", "updated_at": now})
            pipe.hdel(job_key(job_id), "dead_at", "next_attempt_at", "slot_at")
            pipe.expire(job_key(job_id), self.record_ttl)
            pipe.delete(lock_key(job_id))
            pipe.zadd(held_key(account), {job_id: now})
            pipe.zrem(INFLIGHT_KEY, job_id)
            _remove_dead_letter(pipe, job_id)
        pipe.execute()

    def count(self, field: str, amount: int = 1) -> None:
        self.client.hincrby(STATS_KEY, field, amount)
