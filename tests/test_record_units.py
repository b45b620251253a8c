"""igsend.core.records without a worker: what each step writes of a job's record and of the indexes around it (the
pending, delayed and in-flight sets, the lock, the attempt log, the DLQ, the outcome stream, the counters, the
console's series, the sent index), and what a reader decodes of it. The Redis is the suite's own, in a database
no worker consumes (tests/test_record_states.py explores the same steps in random interleavings)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from igsend.core import records, sent, series
from igsend.core.errors import CancelRefused, ReplayRefused
from igsend.core.records import JobStatus, Outcomes
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
from tests.conftest import environment

MESSAGE = {"kind": "text", "recipient": "r1", "account": "shop", "text": "héllo"}
TTL = 600  # record_ttl of these tests' Outcomes


@pytest.fixture
def r(private_db: redis_lib.Redis) -> redis_lib.Redis:
    """A database of its own, so the session's worker and its scheduler never see these keys."""
    return private_db


@pytest.fixture
def outcomes(r: redis_lib.Redis) -> Outcomes:
    return Outcomes(r, record_ttl=TTL, replica_acks=0, replica_timeout=0.01)


def new_id() -> str:
    return str(uuid.uuid4())


def create(r: redis_lib.Redis, message: dict[str, Any] | None = None, *, job_id: str | None = None,
           now: float | None = None) -> str:
    """A job as a producer creates it (its fields from records.new_record), not yet in any index."""
    job_id = job_id or new_id()
    record = records.new_record(job_id, message or MESSAGE, idempotency_key=None,
                                now=time.time() if now is None else now)
    r.hset(job_key(job_id), mapping=record)
    return job_id


def sending(r: redis_lib.Redis, job_id: str, attempt: int = 1) -> None:
    """Admission let attempt ``attempt`` POST: the job is ``sending``, locked and in the in-flight set."""
    r.hset(job_key(job_id), mapping={"status": "sending", "inflight": attempt, "attempts": attempt})
    r.set(lock_key(job_id), "a worker", ex=60)
    r.zadd(INFLIGHT_KEY, {job_id: time.time() + 60})


def entry(attempt: int = 1, outcome: str = "retry") -> dict[str, Any]:
    return {"attempt": attempt, "at": time.time(), "latency_ms": 12.5, "outcome": outcome}


def fields(r: redis_lib.Redis, job_id: str) -> dict[str, str]:
    return r.hgetall(job_key(job_id))


def log(r: redis_lib.Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(attempts_key(job_id), 0, -1)]


def stream(r: redis_lib.Redis) -> list[dict[str, str]]:
    return [entry for _, entry in r.xrange(OUTCOMES_KEY)]


def between(value: str | float, before: float, after: float) -> bool:
    return before <= float(value) <= after


def time_of(r: redis_lib.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1_000_000


def minutes(r: redis_lib.Redis, account: str) -> series.Series:
    """The last two minutes of ``account``'s series (a step may fall on either side of a minute's end)."""
    return series.read(r, account, minutes=2)


def commands(r: redis_lib.Redis, do: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """What clients (not scripts) send to ``r``'s database from when ``do()`` starts, as MONITOR shows it (a worker
    of the session may be sending commands to another database)."""
    db = r.connection_pool.connection_kwargs["db"]
    with r.monitor() as monitor:
        do()
        while True:
            command = monitor.next_command()
            if command["client_type"] != "lua" and command["db"] == db:
                yield command


def last_command(r: redis_lib.Redis, name: str, do: Callable[[], Any]) -> list[str]:
    """The first ``name`` command sent while ``do()`` runs: its name, then its arguments."""
    for command in commands(r, do):
        words = command["command"].split()
        if words[0].upper() == name:
            return words
    raise AssertionError("unreachable")


class Meanwhile(dict[str, Any]):
    """A dict whose first ``items()`` or ``get()`` (what json.dumps or the step reads of it; json.dumps reads no
    item of an empty dict) runs ``change`` first: another client's write between a step's look at the job and its
    transaction."""

    def __init__(self, change: Callable[[], Any], **values: Any):
        super().__init__(**values)
        self.change: Callable[[], Any] | None = change

    def items(self) -> Any:
        change, self.change = self.change, None
        if change is not None:
            change()
        return super().items()

    def get(self, key: str, default: Any = None) -> Any:
        change, self.change = self.change, None
        if change is not None:
            change()
        return super().get(key, default)


# --- statuses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "scheduled", "sending", "retrying", "dead", "unknown", "cancelled"])
def test_the_status_a_record_holds_is_the_status_read(r: redis_lib.Redis, status: str) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), "status", status)
    assert records.status_of(r, job_id) == JobStatus(status)
    assert records.status_of(r, job_id).value == status
    assert records.read(r, job_id)["status"] == status


def test_only_delivered_dead_unknown_and_cancelled_are_final() -> None:
    assert {status.value for status in JobStatus if status.final} == {"delivered", "dead", "unknown", "cancelled"}


def test_a_delivered_record_wins_over_a_hash_and_no_record_is_not_found(r: redis_lib.Redis) -> None:
    job_id = create(r)
    r.set(done_key(job_id), json.dumps({"k": "text", "a": "shop", "r": "r1", "c": 1.0, "e": 5}))
    assert records.status_of(r, job_id) is JobStatus.DELIVERED
    assert records.status_of(r, new_id()) is JobStatus.NOT_FOUND
    assert records.status_of(r, new_id()).value == "not_found"


def test_statuses_of_a_batch_longer_than_one_round_trip_keep_their_order(r: redis_lib.Redis) -> None:
    cycle = ["queued", "sending", None, "delivered", "dead", "retrying", "cancelled"]
    job_ids = [f"batch-{i}" for i in range(2003)]
    pipe = r.pipeline(transaction=False)
    for i, job_id in enumerate(job_ids):
        status = cycle[i % len(cycle)]
        if status == "delivered":
            pipe.set(done_key(job_id), "{}")
        elif status is not None:
            pipe.hset(job_key(job_id), "status", status)
    pipe.execute()
    expected = [JobStatus(cycle[i % len(cycle)] or "not_found") for i in range(len(job_ids))]
    assert records.statuses(r, job_ids) == expected
    assert records.statuses(r, []) == []


def test_exists_sees_a_record_in_progress_or_a_delivered_one(r: redis_lib.Redis) -> None:
    in_progress, delivered = create(r), new_id()
    r.set(done_key(delivered), "{}")
    assert records.exists(r, in_progress) is True
    assert records.exists(r, delivered) is True
    assert records.exists(r, new_id()) is False


# --- a new record ---------------------------------------------------------------------------------------------------


def test_a_new_record_is_queued_with_the_message_and_who_it_goes_to() -> None:
    record = records.new_record("j1", MESSAGE, idempotency_key="key-1", now=1000.5)
    assert record == {"id": "j1", "status": "queued", "kind": "text", "account": "shop", "recipient": "r1",
                      "message": json.dumps(MESSAGE, ensure_ascii=False), "attempts": 0, "created_at": 1000.5,
                      "updated_at": 1000.5, "idempotency_key": "key-1"}
    assert "héllo" in record["message"]  # the text as written, not \u escapes
    assert records.new_record("j1", MESSAGE, idempotency_key=None, now=1.0)["idempotency_key"] == ""


def test_a_private_reply_goes_to_the_comment_it_answers() -> None:
    reply = {"kind": "text", "comment_id": "c9", "account": "shop", "text": "thanks"}
    assert records.recipient_of(reply) == "comment:c9"
    assert records.recipient_of(MESSAGE) == "r1"
    assert records.new_record("j1", reply, idempotency_key=None, now=1.0)["recipient"] == "comment:c9"


@pytest.mark.parametrize(("ahead", "due"), [(None, False), (0.4, False), (0.5, False), (0.6, True), (3600, True)])
def test_a_send_at_more_than_half_a_second_ahead_is_scheduled(ahead: float | None, due: bool) -> None:
    now = 1000.0
    message = {**MESSAGE} if ahead is None else {**MESSAGE, "send_at": now + ahead}
    expected = now + ahead if due and ahead is not None else None
    assert records.scheduled_for(message, now) == expected
    record = records.new_record("j1", message, idempotency_key=None, now=now)
    assert record == {"id": "j1", "status": "scheduled" if due else "queued", "kind": "text", "account": "shop",
                      "recipient": "r1", "message": json.dumps(message, ensure_ascii=False), "attempts": 0,
                      "created_at": now, "updated_at": now, "idempotency_key": "",
                      **({"next_attempt_at": expected} if due else {})}


def test_a_send_at_as_text_or_in_the_past_is_read_as_a_number() -> None:
    assert records.scheduled_for({**MESSAGE, "send_at": "2000"}, 1000.0) == 2000.0
    assert records.scheduled_for({**MESSAGE, "send_at": 10}, 1000.0) is None


def test_an_ordered_message_names_its_conversation_and_a_bulk_one_its_priority() -> None:
    ordered = records.new_record("j1", {**MESSAGE, "ordered": True}, idempotency_key=None, now=1.0)
    assert ordered["conversation"] == conversation_key("shop", "r1")
    assert records.conversation_of({**MESSAGE, "ordered": True}) == conversation_key("shop", "r1")
    assert records.conversation_of(MESSAGE) is None
    assert records.conversation_of({**MESSAGE, "ordered": False}) is None
    plain = records.new_record("j1", {**MESSAGE, "ordered": False, "priority": "normal"}, idempotency_key=None,
                               now=1.0)
    assert "conversation" not in plain and "priority" not in plain
    assert records.new_record("j1", {**MESSAGE, "priority": "bulk"}, idempotency_key=None, now=1.0)["priority"] \
        == "bulk"


# --- decode and read ------------------------------------------------------------------------------------------------


def test_a_record_in_progress_reads_as_its_status_json_with_its_attempt_log(r: redis_lib.Redis) -> None:
    r.hset(job_key("j1"), mapping={
        "id": "j1", "status": "dead", "kind": "text", "account": "shop", "recipient": "r1", "attempts": "2",
        "created_at": "100.5", "updated_at": "101.25", "result": json.dumps({"recipient_id": "r1"}),
        "error": json.dumps({"code": 551}), "message": json.dumps(MESSAGE), "next_attempt_at": "102",
        "delivered_at": "103", "dead_at": "104", "reason": "permanent: refused", "inflight": ""})
    r.rpush(attempts_key("j1"), *[json.dumps({"attempt": n}) for n in (1, 2, 3)])
    assert records.read(r, "j1") == {
        "id": "j1", "status": "dead", "kind": "text", "account": "shop", "recipient": "r1", "attempts": 2,
        "created_at": 100.5, "updated_at": 101.25, "read_at": None, "result": {"recipient_id": "r1"},
        "error": {"code": 551}, "message": MESSAGE, "next_attempt_at": 102.0, "delivered_at": 103.0,
        "dead_at": 104.0, "reason": "permanent: refused",
        "attempt_log": [{"attempt": 1}, {"attempt": 2}, {"attempt": 3}]}


def test_a_bare_record_reads_with_no_attempts_and_no_times(r: redis_lib.Redis) -> None:
    r.hset(job_key("j1"), mapping={"status": "cancelled", "created_at": "", "error": "", "reason": ""})
    assert records.read(r, "j1") == {
        "id": None, "status": "cancelled", "kind": None, "account": None, "recipient": None, "attempts": 0,
        "created_at": None, "updated_at": None, "read_at": None, "attempt_log": []}
    assert records.decode({}) == {}


def test_no_record_reads_as_nothing(r: redis_lib.Redis) -> None:
    assert records.read(r, "j-none") == {}


def test_a_compact_delivered_record_reads_as_the_same_status_json(r: redis_lib.Redis) -> None:
    r.set(done_key("j1"), json.dumps({"k": "text", "a": "shop", "r": "r1", "c": 1000.123456, "e": 500, "ms": 250,
                                      "mi": "~abc", "rd": 1.5}))
    assert records.read(r, "j1") == {
        "id": "j1", "status": "delivered", "kind": "text", "account": "shop", "recipient": "r1", "attempts": 1,
        "created_at": 1000.123456, "updated_at": 1000.6235, "delivered_at": 1000.6235,
        "result": {"recipient_id": "r1", "message_id": sent.MESSAGE_ID_PREFIX + "abc"},
        "attempt_log": [{"attempt": 1, "at": 1000.6235 - 0.25, "latency_ms": 250, "outcome": "delivered"}],
        "read_at": "1970-01-01T00:00:01.500Z"}


def test_a_compact_record_of_several_attempts_to_another_recipient_id(r: redis_lib.Redis) -> None:
    attempts = [{"attempt": 1, "outcome": "retry"}, {"attempt": 2, "outcome": "delivered"}]
    r.set(done_key("j1"), json.dumps({"k": "image", "a": "shop", "r": "comment:c9", "ri": "igsid-7", "c": 1000.0,
                                      "n": 2, "l": attempts, "mi": "m.1"}))
    record = records.read(r, "j1")
    assert record["result"] == {"recipient_id": "igsid-7", "message_id": "m.1", "comment_id": "c9"}
    assert (record["attempts"], record["attempt_log"]) == (2, attempts)
    assert (record["delivered_at"], record["updated_at"], record["read_at"]) == (1000.0, 1000.0, None)


def test_an_older_compact_record_keeps_its_delivery_time_and_a_missing_latency_is_none(r: redis_lib.Redis) -> None:
    r.set(done_key("j1"), json.dumps({"k": "text", "a": "shop", "r": "r1", "c": 990.0, "d": 1000.0, "n": 3}))
    record = records.read(r, "j1")
    assert (record["delivered_at"], record["attempts"], record["result"]) == (1000.0, 3, {"recipient_id": "r1"})
    assert record["attempt_log"] == [{"attempt": 3, "at": 1000.0, "latency_ms": None, "outcome": "delivered"}]


def test_unix_seconds_read_as_iso_time_in_utc_to_the_millisecond() -> None:
    assert records.iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert records.iso_time(1_765_015_200.1234) == "2025-12-06T10:00:00.123Z"


# --- delivered --------------------------------------------------------------------------------------------------------


def test_a_delivered_job_shrinks_to_its_compact_record_and_leaves_every_index(r: redis_lib.Redis,
                                                                                outcomes: Outcomes) -> None:
    job_id = create(r, now=time.time() - 100)  # slower than the last latency bound: the last bucket
    created = float(fields(r, job_id)["created_at"])
    sending(r, job_id)
    r.hset(DLQ_KEY, job_id, "{}")
    r.zadd(DLQ_INDEX_KEY, {job_id: 1.0})
    r.set("igsend:breaker:shop", "open")
    before = time.time()
    outcomes.delivered(job_id, {"recipient_id": "r1", "message_id": sent.MESSAGE_ID_PREFIX + "xyz"},
                       entry(1, "delivered"), account="shop", forget=["igsend:breaker:shop"])
    after = time.time()
    record = records.read(r, job_id)
    assert record["status"] == "delivered"
    assert record["created_at"] == pytest.approx(created, abs=0.001)  # Lua's cjson keeps 14 digits
    assert record["result"] == {"recipient_id": "r1", "message_id": sent.MESSAGE_ID_PREFIX + "xyz"}
    assert between(record["delivered_at"], before - 0.001, after + 0.001)
    assert record["attempt_log"][0]["latency_ms"] == 12.5
    assert json.loads(r.get(done_key(job_id)))["mi"] == "~xyz"
    assert r.ttl(done_key(job_id)) == pytest.approx(24 * 3600, abs=5)  # delivered_ttl's default: a day
    for key in (job_key(job_id), attempts_key(job_id), lock_key(job_id), "igsend:breaker:shop"):
        assert not r.exists(key), key
    assert r.zscore(INFLIGHT_KEY, job_id) is None
    assert not r.hexists(DLQ_KEY, job_id) and r.zscore(DLQ_INDEX_KEY, job_id) is None
    assert stream(r) == [{"id": job_id, "status": "delivered", "account": "shop", "kind": "text",
                          "message_id": sent.MESSAGE_ID_PREFIX + "xyz", "at": stream(r)[0]["at"]}]
    assert between(stream(r)[0]["at"], before, after)
    # Meta's message id leads back to the job; the console's charts count it, in its latency bucket
    assert sent.job_of(r, "shop", sent.MESSAGE_ID_PREFIX + "xyz", delivered_ttl=24 * 3600) == job_id
    sent_key = sent.sent_key("shop", before)
    assert r.ttl(sent_key) == pytest.approx(sent.keep_seconds(24 * 3600), abs=5)
    for account in ("shop", series.EVERY_ACCOUNT):
        charts = minutes(r, account)
        assert sum(charts.delivered) == 1
        assert [sum(bucket) for bucket in zip(*charts.latency, strict=True)] == [0] * 7 + [1]
        assert r.ttl(series.series_key(account, before)) == pytest.approx(series.KEEP_SECONDS, abs=5)


def test_a_quick_delivery_counts_in_the_first_latency_bucket(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.delivered(job_id, {"recipient_id": "r1", "message_id": "m.1"}, entry(1, "delivered"), account="shop")
    assert [sum(bucket) for bucket in zip(*minutes(r, "shop").latency, strict=True)] == [1] + [0] * 7
    assert records.read(r, job_id)["result"] == {"recipient_id": "r1", "message_id": "m.1"}


def test_a_delivery_without_a_message_id_or_an_account_is_in_no_index(r: redis_lib.Redis,
                                                                         outcomes: Outcomes) -> None:
    no_message_id, no_account = create(r), create(r)
    outcomes.delivered(no_message_id, {"recipient_id": "r1"}, entry(1, "delivered"), account="shop")
    outcomes.delivered(no_account, {"recipient_id": "r1", "message_id": "m.2"}, entry(1, "delivered"))
    assert records.read(r, no_message_id)["result"] == {"recipient_id": "r1"}
    assert records.read(r, no_account)["result"] == {"recipient_id": "r1", "message_id": "m.2"}
    assert [e["message_id"] for e in stream(r)] == ["", "m.2"]
    assert list(r.scan_iter("igsend:sent:*")) == []
    assert sum(minutes(r, "shop").delivered) == 1  # the first one only
    assert sum(minutes(r, series.EVERY_ACCOUNT).delivered) == 1


def test_a_delivered_record_is_kept_for_the_delivered_ttl(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, delivered_ttl=7200, replica_acks=0)
    job_id = create(r)
    outcomes.delivered(job_id, {"recipient_id": "r1", "message_id": "m.1"}, entry(1, "delivered"), account="shop")
    assert r.ttl(done_key(job_id)) == pytest.approx(7200, abs=5)
    assert r.ttl(sent.sent_key("shop", time.time())) == pytest.approx(sent.keep_seconds(7200), abs=5)
    assert sent.job_of(r, "shop", "m.1", delivered_ttl=7200) == job_id


def test_an_ordered_delivery_lets_the_next_job_of_its_conversation_go(r: redis_lib.Redis,
                                                                       outcomes: Outcomes) -> None:
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), mapping={"waiting_for": first, "reason": "waiting for its turn"})
    before = time_of(r)
    outcomes.delivered(first, {"recipient_id": "r1"}, entry(1, "delivered"), conversation=conversation)
    assert records.status_of(r, first) is JobStatus.DELIVERED
    assert r.zrange(conversation, 0, -1) == [second]
    assert "waiting_for" not in fields(r, second) and "reason" not in fields(r, second)
    assert between(r.zscore(DELAYED_KEY, second) or 0, before, time_of(r))


def test_a_release_queued_on_a_pipeline_happens_when_the_pipeline_runs(r: redis_lib.Redis) -> None:
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), mapping={"waiting_for": first, "next_attempt_at": time.time() + 3600})
    pipe = r.pipeline()
    records.release(r, conversation, first, pipe=pipe)
    assert r.zrange(conversation, 0, -1) == [first, second]  # not yet
    pipe.execute()
    assert r.zrange(conversation, 0, -1) == [second]
    assert r.zscore(DELAYED_KEY, second) == pytest.approx(float(fields(r, second)["next_attempt_at"]), abs=0.001)
    records.release(r, conversation, second)
    assert r.zcard(conversation) == 0


def test_delivered_many_records_each_job_and_forgets_the_breaker(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_ids = [create(r) for _ in range(3)]
    r.set("igsend:breaker:shop", "open")
    outcomes.delivered_many([(job_id, {"recipient_id": "r1", "message_id": f"m.{i}"}, entry(1, "delivered"))
                             for i, job_id in enumerate(job_ids)], account="shop", forget=["igsend:breaker:shop"])
    assert records.statuses(r, job_ids) == [JobStatus.DELIVERED] * 3
    assert [sent.job_of(r, "shop", f"m.{i}", delivered_ttl=24 * 3600) for i in range(3)] == job_ids
    assert not r.exists("igsend:breaker:shop")
    assert [e["id"] for e in stream(r)] == job_ids
    outcomes.delivered_many([], account="shop")  # nothing to record
    assert len(stream(r)) == 3


def test_delivered_many_forgets_the_breaker_in_the_step_of_the_last_job(r: redis_lib.Redis,
                                                                          outcomes: Outcomes) -> None:
    """The breaker goes with the last job's lua/finish.lua call: when that job was recorded already (a copy of it
    delivered before), that call changes nothing, and the breaker stays."""
    first, middle, last = create(r), create(r), create(r)
    outcomes.delivered(last, {"recipient_id": "r1"}, entry(1, "delivered"))
    r.set("igsend:breaker:shop", "open")
    outcomes.delivered_many([(job_id, {"recipient_id": "r1"}, entry(1, "delivered")) for job_id in
                             (first, middle, last)], account="shop", forget=["igsend:breaker:shop"])
    assert records.statuses(r, [first, middle, last]) == [JobStatus.DELIVERED] * 3
    assert r.get("igsend:breaker:shop") == "open"


def test_delivered_many_records_each_job_once_after_redis_lost_its_scripts(r: redis_lib.Redis,
                                                                          outcomes: Outcomes) -> None:
    """A restart, a failover or SCRIPT FLUSH leaves Redis without lua/finish.lua: each EVALSHA of the batch is
    answered NOSCRIPT and runs nothing; they go again once the script is loaded, once each."""
    job_ids = [create(r) for _ in range(3)]
    r.script_flush()
    outcomes.delivered_many([(job_id, {"recipient_id": "r1"}, entry(1, "delivered")) for job_id in job_ids],
                            account="shop")
    assert records.statuses(r, job_ids) == [JobStatus.DELIVERED] * 3
    assert [e["id"] for e in stream(r)] == job_ids  # one outcome each, in order
    assert r.script_exists(outcomes._finish.sha) == [True]


def test_delivered_many_raises_what_redis_refuses_other_than_a_missing_script(r: redis_lib.Redis,
                                                                             outcomes: Outcomes) -> None:
    recorded, refused = create(r), create(r)
    r.delete(job_key(refused))
    r.set(job_key(refused), "not a hash")  # WRONGTYPE inside lua/finish.lua
    with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE"):
        outcomes.delivered_many([(job_id, {"recipient_id": "r1"}, entry(1, "delivered")) for job_id in
                                 (recorded, refused)], account="shop")
    assert records.status_of(r, recorded) is JobStatus.DELIVERED  # the batch's other calls ran


# --- replica acknowledgements -------------------------------------------------------------------------------------


def test_a_delivery_no_replica_confirms_raises_after_the_record_is_written(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, replica_acks=1, replica_timeout=0.01)
    job_id = create(r)
    with pytest.raises(records.NotReplicated, match=(
            f"^job {job_id}'s delivered record: 0 of the 1 replica\\(s\\) IGSEND_REDIS_REPLICA_ACKS asks for "
            "confirmed it within 0.01 s$")):
        outcomes.delivered(job_id, {"recipient_id": "r1"}, entry(1, "delivered"))
    assert records.status_of(r, job_id) is JobStatus.DELIVERED


def test_an_ordered_delivery_no_replica_confirms_raises_after_the_release(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, replica_acks=1, replica_timeout=0.01)
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), "waiting_for", first)
    with pytest.raises(records.NotReplicated, match=f"^job {first}'s delivered record: 0 of the 1 "):
        outcomes.delivered(first, {"recipient_id": "r1"}, entry(1, "delivered"), conversation=conversation)
    assert records.status_of(r, first) is JobStatus.DELIVERED
    assert r.zscore(DELAYED_KEY, second) is not None


def test_a_batch_no_replica_confirms_raises_after_the_records_are_written(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, replica_acks=2, replica_timeout=0.01)
    job_ids = [create(r) for _ in range(3)]
    with pytest.raises(records.NotReplicated, match=(
            "^3 delivered records: 0 of the 2 replica\\(s\\) IGSEND_REDIS_REPLICA_ACKS asks for confirmed it "
            "within 0.01 s$")):
        outcomes.delivered_many([(job_id, {"recipient_id": "r1"}, entry(1, "delivered")) for job_id in job_ids],
                                account="shop")
    assert records.statuses(r, job_ids) == [JobStatus.DELIVERED] * 3
    outcomes.delivered_many([], account="shop")  # nothing written: nothing to wait for


def test_the_replica_acks_come_from_the_settings_unless_given(r: redis_lib.Redis) -> None:
    with environment(IGSEND_REDIS_REPLICA_ACKS="1", IGSEND_REDIS_REPLICA_TIMEOUT="0.02"):
        from_settings = Outcomes(r, record_ttl=TTL)
        given = Outcomes(r, record_ttl=TTL, replica_acks=0, replica_timeout=5.0)
    assert (from_settings.replica_acks, from_settings.replica_timeout) == (1, 0.02)
    assert (given.replica_acks, given.replica_timeout) == (0, 5.0)
    job_id = create(r)
    with pytest.raises(records.NotReplicated, match="within 0.02 s$"):
        from_settings.delivered(job_id, {"recipient_id": "r1"}, entry(1, "delivered"))
    given.delivered(create(r), {"recipient_id": "r1"}, entry(1, "delivered"))  # no WAIT


@pytest.mark.parametrize(("timeout", "milliseconds"), [(0.6, "600"), (0.0001, "1"), (0.0, "1")])
def test_wait_asks_for_the_timeout_in_milliseconds_and_never_for_zero(r: redis_lib.Redis, timeout: float,
                                                                      milliseconds: str) -> None:
    """WAIT's timeout is milliseconds, and 0 would block for ever."""
    pipe = r.pipeline(transaction=False)
    records.wait_for_replicas(pipe, 0, timeout)  # 0 replicas: answered at once
    assert last_command(r, "WAIT", pipe.execute) == ["WAIT", "0", milliseconds]


def test_enough_replicas_pass_the_check() -> None:
    records.check_replicas(2, 2, 1.0, "a write")
    records.check_replicas(3, 2, 1.0, "a write")
    with pytest.raises(records.NotReplicated, match="^a write: 1 of the 2 replica"):
        records.check_replicas(1, 2, 1.0, "a write")


# --- retry, resend, defer, unadmit ----------------------------------------------------------------------------------


def test_a_retry_makes_the_job_due_again_and_ends_its_attempt(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    due = time.time() + 30
    before = time.time()
    outcomes.retry(job_id, due, reason="transient: 503", error={"code": 2, "message": "é"},
                   attempt_entry=entry(1))
    after = time.time()
    record = fields(r, job_id)
    assert record["status"] == "retrying" and float(record["next_attempt_at"]) == due
    assert (record["inflight"], record["reason"], record["failures"]) == ("", "transient: 503", "1")
    assert json.loads(record["error"]) == {"code": 2, "message": "é"}
    assert between(record["updated_at"], before, after)
    assert r.zscore(DELAYED_KEY, job_id) == due
    assert not r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is None
    assert r.ttl(job_key(job_id)) == pytest.approx(TTL, abs=5)
    assert [a["attempt"] for a in log(r, job_id)] == [1]
    assert r.ttl(attempts_key(job_id)) == pytest.approx(TTL, abs=5)
    assert outcomes.failures(job_id) == 1
    assert sum(minutes(r, "shop").throttled) == 0


def test_a_throttled_retry_counts_in_the_charts_and_an_uncounted_one_is_no_failure(r: redis_lib.Redis,
                                                                                    outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.retry(job_id, time.time() + 30, reason="throttled", error={}, attempt_entry=entry(1),
                   count_failure=False, throttled_on="shop")
    assert outcomes.failures(job_id) == 0 and "failures" not in fields(r, job_id)
    assert fields(r, job_id)["status"] == "retrying"
    assert sum(minutes(r, "shop").throttled) == 1
    assert sum(minutes(r, series.EVERY_ACCOUNT).throttled) == 1


def test_a_retry_without_an_attempt_logs_nothing(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.retry(job_id, time.time(), reason="r", error={}, attempt_entry=None)
    assert fields(r, job_id)["status"] == "retrying"
    assert log(r, job_id) == []
    outcomes.retry(job_id, time.time(), reason="r", error={}, attempt_entry={"event": "republished"})
    assert log(r, job_id) == [{"event": "republished"}]  # an event, not a POST: logged without a fence
    assert outcomes.failures(job_id) == 2


@pytest.mark.parametrize("late", ["another attempt", "no attempt", "delivered"])
def test_a_late_outcome_of_an_attempt_no_longer_in_flight_changes_nothing(r: redis_lib.Redis, outcomes: Outcomes,
                                                                          late: str) -> None:
    job_id = create(r)
    sending(r, job_id, attempt=2)
    if late == "no attempt":
        r.hdel(job_key(job_id), "inflight")
    if late == "delivered":
        r.set(done_key(job_id), "{}")
    before = fields(r, job_id)
    outcomes.retry(job_id, time.time(), reason="late", error={}, attempt_entry=entry(1))
    outcomes.dead(job_id, "late", {"code": 1}, entry(1))
    assert fields(r, job_id) == before
    assert log(r, job_id) == [] and r.zcard(DELAYED_KEY) == 0 and r.zcard(DLQ_INDEX_KEY) == 0
    assert r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is not None
    assert r.hget(STATS_KEY, "superseded_outcomes_total") == "2"


def test_an_outcome_looks_again_when_the_job_changes_under_it(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    """Another copy takes the job over (attempt 2) between the retry's look at it and its write: the write is
    dropped (WATCH), and the retry, looking again, finds its attempt superseded."""
    job_id = create(r)
    sending(r, job_id)
    outcomes.retry(job_id, time.time(), reason="late", error=Meanwhile(lambda: sending(r, job_id, attempt=2), code=2),
                   attempt_entry=entry(1))
    assert fields(r, job_id)["status"] == "sending" and fields(r, job_id)["inflight"] == "2"
    assert r.zcard(DELAYED_KEY) == 0
    assert r.hget(STATS_KEY, "superseded_outcomes_total") == "1"


def test_an_outcome_looks_again_when_the_job_is_delivered_under_it(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.dead(job_id, "late", Meanwhile(lambda: r.set(done_key(job_id), "{}"), code=1), entry(1))
    assert r.zcard(DLQ_INDEX_KEY) == 0 and fields(r, job_id)["status"] == "sending"
    assert r.hget(STATS_KEY, "superseded_outcomes_total") == "1"


def test_a_resend_makes_the_job_due_now_once(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    before = time.time()
    outcomes.resend(job_id, reason="reconciled: not at Meta", attempt_entry=entry(1, "unknown"))
    after = time.time()
    record = fields(r, job_id)
    assert (record["status"], record["inflight"], record["reason"], record["resent"], record["failures"]) == (
        "retrying", "", "reconciled: not at Meta", "1", "1")
    assert between(record["next_attempt_at"], before, after)
    assert record["updated_at"] == record["next_attempt_at"]
    assert r.zscore(DELAYED_KEY, job_id) == float(record["next_attempt_at"])
    assert not r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is None
    assert r.ttl(job_key(job_id)) == pytest.approx(TTL, abs=5)
    assert [a["outcome"] for a in log(r, job_id)] == ["unknown"]


def test_a_deferred_reconciliation_waits_still_sending_with_its_attempt_in_flight(r: redis_lib.Redis,
                                                                                    outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    due = time.time() + 120
    before = time.time()
    outcomes.defer_reconcile(job_id, due, reason="reconciling", lost_answer="timeout", started=before - 5,
                             attempt_entry=entry(1, "unknown"))
    after = time.time()
    record = fields(r, job_id)
    assert (record["status"], record["inflight"], record["reason"], record["lost_answer"]) == (
        "sending", "1", "reconciling", "timeout")
    assert float(record["inflight_at"]) == before - 5 and between(record["updated_at"], before, after)
    assert r.zscore(DELAYED_KEY, job_id) == due and r.zscore(INFLIGHT_KEY, job_id) == due
    assert not r.exists(lock_key(job_id))
    assert [a["outcome"] for a in log(r, job_id)] == ["unknown"]


def test_an_unreplicated_admission_is_taken_back_uncounted(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id, attempt=2)
    due = time.time() + 1
    before = time.time()
    outcomes.unadmit(job_id, due, reason="not replicated")
    after = time.time()
    record = fields(r, job_id)
    assert (record["status"], record["inflight"], record["reason"], record["attempts"]) == (
        "retrying", "", "not replicated", "1")
    assert float(record["next_attempt_at"]) == due and between(record["updated_at"], before, after)
    assert r.hget(STATS_KEY, "unreplicated_admissions_total") == "1"
    assert r.zscore(DELAYED_KEY, job_id) == due
    assert not r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is None
    assert r.ttl(job_key(job_id)) == pytest.approx(TTL, abs=5)
    assert outcomes.failures(job_id) == 0


def test_an_orphaned_attempt_is_let_go_and_an_attempt_recorded(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.forget_inflight(job_id)
    assert fields(r, job_id)["inflight"] == "" and fields(r, job_id)["status"] == "sending"
    outcomes.record_attempt(job_id, {"attempt": 1, "outcome": "unknown"})
    assert log(r, job_id) == [{"attempt": 1, "outcome": "unknown"}]
    assert r.ttl(attempts_key(job_id)) == pytest.approx(TTL, abs=5)
    outcomes.count("odd_total")
    outcomes.count("odd_total", 3)
    assert r.hget(STATS_KEY, "odd_total") == "4"


# --- dead, unknown, the DLQ -------------------------------------------------------------------------------------------


def test_a_dead_job_is_filed_in_the_dlq_with_every_attempt(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), mapping={"attempts": 3, "next_attempt_at": 5, "slot_at": 6})
    earlier = [{"attempt": n, "outcome": "retry"} for n in (1, 2, 3)]
    r.rpush(attempts_key(job_id), *[json.dumps(e) for e in earlier])
    sending(r, job_id, attempt=4)
    r.hset(job_key(job_id), "attempts", 3)
    r.expire(job_key(job_id), TTL)  # as a retry left it
    r.expire(attempts_key(job_id), TTL)
    created = fields(r, job_id)["created_at"]
    before = time.time()
    outcomes.dead(job_id, "permanent: refused", {"code": 551, "message": "é"}, entry(4, "dead"))
    after = time.time()
    record = fields(r, job_id)
    assert (record["status"], record["inflight"], record["reason"], record["attempts"], record["created_at"]) == (
        "dead", "", "permanent: refused", "3", created)
    assert json.loads(record["error"]) == {"code": 551, "message": "é"}
    assert between(record["dead_at"], before, after) and record["updated_at"] == record["dead_at"]
    assert "next_attempt_at" not in record and "slot_at" not in record
    assert r.ttl(job_key(job_id)) == -1 and r.ttl(attempts_key(job_id)) == -1  # as long as its DLQ entry
    assert not r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is None
    dead_at = float(record["dead_at"])
    assert json.loads(r.hget(DLQ_KEY, job_id) or "") == {
        "id": job_id, "account": "shop", "recipient": "r1", "kind": "text", "status": "dead", "message": MESSAGE,
        "reason": "permanent: refused", "error": {"code": 551, "message": "é"}, "dead_at": dead_at,
        "attempts": [*earlier, log(r, job_id)[3]]}
    assert "é" in (r.hget(DLQ_KEY, job_id) or "")
    assert log(r, job_id)[:3] == earlier and log(r, job_id)[3]["outcome"] == "dead"
    assert r.zscore(DLQ_INDEX_KEY, job_id) == dead_at
    assert r.hget(STATS_KEY, "dead_total") == "1"
    assert stream(r) == [{"id": job_id, "status": "dead", "account": "shop", "kind": "text", "message_id": "",
                          "at": record["dead_at"]}]
    assert sum(minutes(r, "shop").dead) == 1 and sum(minutes(r, series.EVERY_ACCOUNT).dead) == 1
    assert records.read(r, job_id)["dead_at"] == dead_at


def test_an_unknown_outcome_without_an_error_or_an_attempt(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    sending(r, job_id)
    outcomes.dead(job_id, "outcome unknown", None, None, status=JobStatus.UNKNOWN)
    record = fields(r, job_id)
    assert record["status"] == "unknown" and "error" not in record
    entry_ = json.loads(r.hget(DLQ_KEY, job_id) or "")
    assert (entry_["status"], entry_["error"], entry_["attempts"]) == ("unknown", None, [])
    assert r.hget(STATS_KEY, "unknown_total") == "1" and r.hget(STATS_KEY, "dead_total") is None
    assert [e["status"] for e in stream(r)] == ["unknown"]


def test_a_job_without_a_record_dies_with_one_made_of_its_defaults(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    message = {"kind": "text", "account": "shop", "text": "ünïcode"}
    before = time.time()
    outcomes.dead("raw-1", "invalid: no recipient", {"code": "invalid"}, None,  # no attempt was made
                  defaults={"kind": "text", "account": "shop", "message": message})
    after = time.time()
    record = fields(r, "raw-1")
    assert (record["id"], record["status"], record["attempts"], record["kind"], record["account"],
            record["recipient"]) == ("raw-1", "dead", "0", "text", "shop", "")
    assert json.loads(record["message"]) == message and "ünïcode" in record["message"]
    assert between(record["created_at"], before, after)
    filed = json.loads(r.hget(DLQ_KEY, "raw-1") or "")
    assert (filed["kind"], filed["account"], filed["recipient"], filed["message"]) == ("text", "shop", None, message)
    assert [e["account"] for e in stream(r)] == ["shop"]


def test_a_job_without_a_record_nor_defaults(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    outcomes.dead("raw-2", "invalid", None, None)
    record = fields(r, "raw-2")
    assert (record["kind"], record["account"], record["recipient"], record["message"], record["attempts"]) == (
        "", "", "", "null", "0")
    assert stream(r)[0]["account"] == "" and stream(r)[0]["kind"] == ""
    assert list(r.scan_iter("igsend:series:*")) == []  # no account: nothing to chart


def test_an_existing_record_keeps_its_fields_over_the_defaults(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    outcomes.dead(job_id, "invalid", None, None, defaults={"account": "other", "kind": "image"})
    record = fields(r, job_id)
    assert (record["account"], record["kind"]) == ("shop", "text")
    filed = json.loads(r.hget(DLQ_KEY, job_id) or "")
    assert (filed["account"], filed["kind"]) == ("shop", "text")


def test_an_ordered_dead_job_lets_the_next_go(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), "waiting_for", first)
    outcomes.dead(first, "permanent", None, None)
    assert r.zrange(conversation, 0, -1) == [first, second]  # held: no conversation given
    outcomes.dead(first, "permanent", None, None, conversation=conversation)
    assert r.zrange(conversation, 0, -1) == [second] and r.zscore(DELAYED_KEY, second) is not None


def test_the_dlq_beyond_its_cap_moves_the_oldest_to_the_archive(r: redis_lib.Redis, tmp_path: Path) -> None:
    archive = tmp_path / "dlq.jsonl"
    outcomes = Outcomes(r, record_ttl=TTL, dlq_max=2, dlq_archive=str(archive), replica_acks=0)
    job_ids = [create(r) for _ in range(4)]
    for job_id in job_ids[:2]:
        outcomes.dead(job_id, "permanent", None, None)
    assert not archive.exists()  # at the cap, not beyond
    for job_id in job_ids[2:]:
        outcomes.dead(job_id, "permanent", None, None)
    assert [json.loads(line)["id"] for line in archive.read_text(encoding="utf-8").splitlines()] == job_ids[:2]
    assert r.zrange(DLQ_INDEX_KEY, 0, -1) == job_ids[2:] and sorted(r.hkeys(DLQ_KEY)) == sorted(job_ids[2:])
    assert records.statuses(r, job_ids) == [JobStatus.NOT_FOUND] * 2 + [JobStatus.DEAD] * 2


def test_the_dlq_keeps_every_entry_without_an_archive(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, dlq_max=1, replica_acks=0)
    for _ in range(3):
        outcomes.dead(create(r), "permanent", None, None)
    assert r.zcard(DLQ_INDEX_KEY) == 3


def test_the_default_dlq_cap_is_ten_thousand(r: redis_lib.Redis, tmp_path: Path) -> None:
    archive = tmp_path / "dlq.jsonl"
    outcomes = Outcomes(r, record_ttl=TTL, dlq_archive=str(archive), replica_acks=0)
    r.zadd(DLQ_INDEX_KEY, {f"old-{i}": i for i in range(9_999)})
    outcomes.dead(create(r), "permanent", None, None)
    assert r.zcard(DLQ_INDEX_KEY) == 10_000 and not archive.exists()
    outcomes.dead(create(r), "permanent", None, None)
    assert r.zcard(DLQ_INDEX_KEY) == 10_000 and r.zscore(DLQ_INDEX_KEY, "old-0") is None


def test_archive_oldest_writes_them_then_deletes_them(r: redis_lib.Redis, tmp_path: Path) -> None:
    archive = tmp_path / "dlq.jsonl"
    archive.write_text("earlier\n", encoding="utf-8")
    for i in range(3):
        r.hset(DLQ_KEY, f"j{i}", json.dumps({"id": f"j{i}"}))
        r.hset(job_key(f"j{i}"), "status", "dead")
        r.rpush(attempts_key(f"j{i}"), "{}")
    r.zadd(DLQ_INDEX_KEY, {"j0": 1, "j1": 2, "j2": 3, "lost": 0})  # an index entry without its entry
    assert records.archive_oldest(r, 3, str(archive)) == 3
    assert archive.read_text(encoding="utf-8") == 'earlier\n{"id": "j0"}\n{"id": "j1"}\n'
    assert r.zrange(DLQ_INDEX_KEY, 0, -1) == ["j2"] and r.hkeys(DLQ_KEY) == ["j2"]
    assert [records.exists(r, f"j{i}") for i in range(3)] == [False, False, True]
    assert not r.exists(attempts_key("j0")) and r.exists(attempts_key("j2"))
    assert records.archive_oldest(r, 5, str(archive)) == 1
    assert records.archive_oldest(r, 5, str(archive)) == 0


def test_an_archive_that_cannot_be_written_leaves_the_dlq_as_it_was(r: redis_lib.Redis, tmp_path: Path) -> None:
    r.hset(DLQ_KEY, "j0", json.dumps({"id": "j0"}))
    r.zadd(DLQ_INDEX_KEY, {"j0": 1.5})
    with pytest.raises(IsADirectoryError):
        records.archive_oldest(r, 1, str(tmp_path))
    assert r.zrange(DLQ_INDEX_KEY, 0, -1, withscores=True) == [("j0", 1.5)]
    assert r.hkeys(DLQ_KEY) == ["j0"]


# --- hold, reopen (replay) ------------------------------------------------------------------------------------------


def test_held_jobs_wait_in_their_accounts_held_set(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    dead, retrying = create(r), create(r)
    outcomes.dead(dead, "permanent", None, None)
    r.hset(job_key(retrying), mapping={"status": "retrying", "next_attempt_at": 5, "slot_at": 6})
    sending(r, retrying)
    before = time.time()
    outcomes.hold("shop", [dead, retrying], "token expired")
    after = time.time()
    for job_id in (dead, retrying):
        record = fields(r, job_id)
        assert (record["status"], record["inflight"], record["reason"]) == ("queued", "", "held: token expired")
        assert not {"dead_at", "next_attempt_at", "slot_at"} & set(record)
        assert between(record["updated_at"], before, after)
        assert between(r.zscore(held_key("shop"), job_id) or 0, before, after)
        assert r.ttl(job_key(job_id)) == pytest.approx(TTL, abs=5)
        assert not r.exists(lock_key(job_id)) and r.zscore(INFLIGHT_KEY, job_id) is None
    assert r.zcard(DLQ_INDEX_KEY) == 0 and r.hlen(DLQ_KEY) == 0


def dead_letter(r: redis_lib.Redis, outcomes: Outcomes) -> dict[str, Any]:
    job_id = create(r)
    r.hset(job_key(job_id), mapping={"failures": 2, "resent": 1, "inflight_at": 5, "lost_answer": "timeout",
                                     "next_attempt_at": 5, "slot_at": 6, "result": ""})
    sending(r, job_id, attempt=2)
    outcomes.dead(job_id, "permanent", {"code": 551}, entry(2, "dead"))
    return json.loads(r.hget(DLQ_KEY, job_id) or "")


def test_a_replay_puts_a_dead_job_back_to_queued_and_out_of_the_dlq(r: redis_lib.Redis,
                                                                      outcomes: Outcomes) -> None:
    filed = dead_letter(r, outcomes)
    job_id = filed["id"]
    r.hset(job_key(job_id), mapping={"next_attempt_at": 7, "slot_at": 8, "result": "", "error": "{}"})
    before = time_of(r)
    records.reopen(r, filed)
    after = time_of(r)
    record = fields(r, job_id)
    assert {k: v for k, v in record.items() if k not in ("updated_at", "created_at")} == {
        "id": job_id, "status": "queued", "kind": "text", "account": "shop", "recipient": "r1",
        "message": json.dumps(MESSAGE, ensure_ascii=False), "failures": "0", "inflight": "",
        "reason": "replayed from the DLQ", "attempts": "2", "idempotency_key": ""}
    assert between(record["updated_at"], before, after) and record["created_at"] == record["updated_at"]
    assert r.zscore(PENDING_KEY, job_id) == float(record["updated_at"])
    assert r.zcard(DLQ_INDEX_KEY) == 0 and r.hlen(DLQ_KEY) == 0


def test_a_replay_of_a_purged_record_counts_the_entrys_attempts(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    filed = dead_letter(r, outcomes)
    r.delete(job_key(filed["id"]))
    records.reopen(r, filed)
    assert fields(r, filed["id"])["attempts"] == str(len(filed["attempts"])) == "1"
    r.delete(job_key(filed["id"]))
    records.reopen(r, {"id": filed["id"], "message": MESSAGE})
    record = fields(r, filed["id"])
    assert (record["attempts"], record["kind"], record["account"], record["recipient"]) == ("0", "", "", "")


@pytest.mark.parametrize("status", ["unknown", "dead"])
def test_a_dead_or_unknown_job_may_be_replayed(r: redis_lib.Redis, status: str) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), "status", status)
    records.reopen(r, {"id": job_id, "message": MESSAGE})
    assert fields(r, job_id)["status"] == "queued"


@pytest.mark.parametrize("status", ["queued", "sending", "retrying", "cancelled", "scheduled"])
def test_a_replay_of_a_job_that_is_not_dead_is_refused(r: redis_lib.Redis, status: str) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), "status", status)
    with pytest.raises(ReplayRefused, match=(f"^job {job_id} is {status}, not dead: not replayed "
                                             r"\(a replay could send it twice\)$")):
        records.reopen(r, {"id": job_id, "message": MESSAGE})
    assert fields(r, job_id)["status"] == status


@pytest.mark.parametrize("how", ["compact record", "result"])
def test_a_replay_of_a_delivered_job_is_refused(r: redis_lib.Redis, how: str) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), "status", "dead")
    if how == "compact record":
        r.set(done_key(job_id), "{}")
    else:
        r.hset(job_key(job_id), "result", json.dumps({"message_id": "m.1"}))
    with pytest.raises(ReplayRefused, match=f"^job {job_id} is delivered, not dead"):
        records.reopen(r, {"id": job_id, "message": MESSAGE})
    assert fields(r, job_id)["status"] == "dead"


@pytest.mark.parametrize("change", ["delivered", "status"])
def test_a_replay_is_aborted_when_the_job_changes_under_it(r: redis_lib.Redis, outcomes: Outcomes,
                                                           change: str) -> None:
    filed = dead_letter(r, outcomes)
    job_id = filed["id"]

    def meanwhile() -> None:
        if change == "delivered":
            r.set(done_key(job_id), "{}")
        else:
            r.hset(job_key(job_id), "status", "queued")

    with pytest.raises(redis_lib.WatchError):
        records.reopen(r, Meanwhile(meanwhile, **filed))
    assert r.zscore(PENDING_KEY, job_id) is None and r.zscore(DLQ_INDEX_KEY, job_id) is not None


# --- cancel, abandon, discard ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "scheduled", "retrying"])
def test_a_job_not_yet_sending_is_cancelled(r: redis_lib.Redis, status: str) -> None:
    job_id = create(r)
    r.hset(job_key(job_id), mapping={"status": status, "next_attempt_at": 5})
    r.zadd(PENDING_KEY, {job_id: 1})
    r.zadd(DELAYED_KEY, {job_id: 1})
    before = time.time()
    assert records.cancel(r, job_id, reason="by the caller", record_ttl=321) == status
    after = time.time()
    record = fields(r, job_id)
    assert (record["status"], record["reason"], record["inflight"]) == ("cancelled", "by the caller", "")
    assert between(record["updated_at"], before, after) and "next_attempt_at" not in record
    assert r.ttl(job_key(job_id)) == pytest.approx(321, abs=5)
    assert r.zscore(PENDING_KEY, job_id) is None and r.zscore(DELAYED_KEY, job_id) is None
    assert stream(r) == [{"id": job_id, "status": "cancelled", "account": "shop", "kind": "text", "message_id": "",
                          "at": record["updated_at"]}]


def test_cancelling_an_unknown_id_is_a_lookup_error_unless_asked_to_create(r: redis_lib.Redis) -> None:
    with pytest.raises(LookupError, match="^no job j-none$"):
        records.cancel(r, "j-none", reason="by the caller", record_ttl=60)
    assert not r.exists(job_key("j-none"))
    assert records.cancel(r, "j-raw", reason="revoked", record_ttl=60, create=True) == ""
    record = fields(r, "j-raw")
    assert (record["id"], record["status"], record["reason"], record["attempts"]) == ("j-raw", "cancelled",
                                                                                      "revoked", "0")


@pytest.mark.parametrize(("status", "why"), [("sending", "its POST may already be at Meta"),
                                             ("dead", "it is already dead"), ("cancelled", "it is already cancelled"),
                                             ("delivered", "it is already delivered")])
def test_a_job_sending_or_final_cannot_be_cancelled(r: redis_lib.Redis, status: str, why: str) -> None:
    job_id = create(r)
    if status == "delivered":
        r.set(done_key(job_id), "{}")
    else:
        r.hset(job_key(job_id), "status", status)
    before = fields(r, job_id)
    with pytest.raises(CancelRefused, match=f"^job {job_id} cannot be cancelled: {why}$") as refused:
        records.cancel(r, job_id, reason="by the caller", record_ttl=60, create=True)
    assert (refused.value.job_id, refused.value.status) == (job_id, status)
    assert fields(r, job_id) == before and stream(r) == []


def test_an_ordered_cancel_lets_the_next_job_go(r: redis_lib.Redis) -> None:
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), "waiting_for", first)
    records.cancel(r, first, reason="by the caller", record_ttl=60)
    assert r.zrange(conversation, 0, -1) == [second] and r.zscore(DELAYED_KEY, second) is not None


def test_records_whose_publish_failed_are_abandoned_cancelled(r: redis_lib.Redis) -> None:
    job_id, bare = create(r), "bare"
    r.hset(job_key(bare), mapping={"status": "queued", "account": ""})
    before = time.time()
    records.abandon(r, ["j-none", job_id, bare], "the broker refused the publish")
    after = time.time()
    for one in (job_id, bare, "j-none"):
        assert fields(r, one)["status"] == "cancelled"
        assert fields(r, one)["reason"] == "the broker refused the publish"
    assert [{k: v for k, v in e.items() if k != "at"} for e in stream(r)] == [
        {"id": job_id, "status": "cancelled", "account": "shop", "kind": "text", "message_id": ""},
        {"id": bare, "status": "cancelled", "account": "", "kind": "", "message_id": ""}]
    assert all(between(e["at"], before, after) for e in stream(r))


def test_the_outcome_stream_is_trimmed_by_whole_nodes_to_about_its_cap(r: redis_lib.Redis) -> None:
    """XADD MAXLEN ~ trims only whole nodes of the stream (cheap): never below the cap, never much above."""
    pipe = r.pipeline(transaction=False)
    for i in range(records.OUTCOMES_MAX + 200):
        pipe.xadd(OUTCOMES_KEY, {"id": f"old-{i}"})
    pipe.execute()
    records.abandon(r, [create(r)], "the broker refused the publish")
    assert records.OUTCOMES_MAX < r.xlen(OUTCOMES_KEY) <= records.OUTCOMES_MAX + 100


def test_the_outcomes_stream_max_trims_what_an_outcome_adds(r: redis_lib.Redis) -> None:
    outcomes = Outcomes(r, record_ttl=TTL, stream_max=5, replica_acks=0)
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(OUTCOMES_KEY, {"id": f"old-{i}"})
    pipe.execute()
    outcomes.dead(create(r), "permanent", None, None)
    assert 5 < r.xlen(OUTCOMES_KEY) < 300  # whole nodes of the stream: never below the cap
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(OUTCOMES_KEY, {"id": f"old-{i}"})
    pipe.execute()
    outcomes.delivered(create(r), {"recipient_id": "r1"}, entry(1, "delivered"))
    assert 5 < r.xlen(OUTCOMES_KEY) < 300


def test_discard_takes_back_the_records_a_failed_call_created(r: redis_lib.Redis) -> None:
    kept, first, second = create(r), create(r), create(r)
    for job_id in (kept, first, second):
        r.zadd(PENDING_KEY, {job_id: 1})
        r.zadd(DELAYED_KEY, {job_id: 1})
    r.set("igsend:idem:shop:k1", first)
    r.set("igsend:idem:shop:k2", "other")
    records.discard(r, [first, second], ["igsend:idem:shop:k1"])
    assert [records.exists(r, job_id) for job_id in (kept, first, second)] == [True, False, False]
    assert r.zrange(PENDING_KEY, 0, -1) == [kept] and r.zrange(DELAYED_KEY, 0, -1) == [kept]
    assert not r.exists("igsend:idem:shop:k1") and r.exists("igsend:idem:shop:k2")
    records.discard(r, [kept], [])
    assert not records.exists(r, kept) and r.zcard(PENDING_KEY) == 0


# --- waiting, read receipts -----------------------------------------------------------------------------------------


def test_waiting_lists_the_delayed_jobs_soonest_first_without_their_message(r: redis_lib.Redis) -> None:
    job_ids = [create(r) for _ in range(5)]
    r.zadd(DELAYED_KEY, {job_id: 100 + i for i, job_id in enumerate(job_ids)})
    r.zadd(DELAYED_KEY, {"j-none": 50})
    jobs, total = records.waiting(r)
    assert total == 6
    assert [(job["id"], job["due_at"]) for job in jobs] == [("j-none", 50.0)] + [
        (job_id, 100.0 + i) for i, job_id in enumerate(job_ids)]
    assert jobs[0] == {"id": "j-none", "status": None, "due_at": 50.0}
    assert jobs[1] == {**{k: v for k, v in records.read(r, job_ids[0]).items()
                          if k not in ("message", "attempt_log")}, "due_at": 100.0}
    page, total = records.waiting(r, start=2, count=2)
    assert ([job["id"] for job in page], total) == (job_ids[1:3], 6)


def test_waiting_shows_fifty_at_a_time(r: redis_lib.Redis) -> None:
    r.zadd(DELAYED_KEY, {f"j{i:02d}": i for i in range(52)})
    jobs, total = records.waiting(r)
    assert ([job["id"] for job in jobs], total) == ([f"j{i:02d}" for i in range(50)], 52)


def test_a_read_receipt_marks_a_delivered_job_read_once(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    outcomes.delivered(job_id, {"recipient_id": "r1"}, entry(1, "delivered"))
    ttl = r.ttl(done_key(job_id))
    pipe = r.pipeline()
    records.mark_read(r, job_id, 1_765_015_200.5, pipe=pipe)
    assert records.read(r, job_id)["read_at"] is None  # queued on the pipeline only
    pipe.execute()
    records.mark_read(r, job_id, 1_765_015_999.0)  # a second receipt: the first time stays
    assert records.read(r, job_id)["read_at"] == "2025-12-06T10:00:00.500Z"
    assert records.read(r, job_id)["status"] == "delivered"
    assert 0 < r.ttl(done_key(job_id)) <= ttl
    records.mark_read(r, "j-none", 1.0)
    assert not r.exists(done_key("j-none"))


def test_a_dead_outcome_dropped_because_the_job_changed_releases_nothing(r: redis_lib.Redis,
                                                                        outcomes: Outcomes) -> None:
    """The release of the conversation is in the dead outcome's transaction: when that transaction is dropped (the
    job changed under it), the next job of the conversation still waits."""
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    r.hset(job_key(second), "waiting_for", first)
    sending(r, first)
    outcomes.dead(first, "permanent", Meanwhile(lambda: sending(r, first, attempt=2), code=1), entry(1, "dead"),
                  conversation=conversation)
    assert fields(r, first)["status"] == "sending" and r.zcard(DLQ_INDEX_KEY) == 0
    assert r.zrange(conversation, 0, -1) == [first, second] and r.zscore(DELAYED_KEY, second) is None
    assert fields(r, second)["waiting_for"] == first


def test_a_dlq_far_beyond_its_cap_archives_all_the_excess_at_once(r: redis_lib.Redis, tmp_path: Path) -> None:
    archive = tmp_path / "dlq.jsonl"
    job_ids = [create(r) for _ in range(4)]
    for job_id in job_ids:
        Outcomes(r, record_ttl=TTL, replica_acks=0).dead(job_id, "permanent", None, None)
    Outcomes(r, record_ttl=TTL, dlq_max=1, dlq_archive=str(archive), replica_acks=0).dead(
        create(r), "permanent", None, None)
    assert [json.loads(line)["id"] for line in archive.read_text(encoding="utf-8").splitlines()] == job_ids
    assert r.zcard(DLQ_INDEX_KEY) == 1


def test_a_delivery_after_earlier_attempts_keeps_them_in_its_log(r: redis_lib.Redis, outcomes: Outcomes) -> None:
    job_id = create(r)
    earlier = [{"attempt": n, "outcome": "retry"} for n in (1, 2)]
    r.rpush(attempts_key(job_id), *[json.dumps(e) for e in earlier])
    r.hset(job_key(job_id), "attempts", 3)
    last = entry(3, "delivered")
    outcomes.delivered(job_id, {"recipient_id": "r1"}, last, account="shop")
    record = records.read(r, job_id)
    assert record["attempts"] == 3
    assert record["attempt_log"] == [*earlier, {**last, "at": pytest.approx(last["at"], abs=0.001)}]
    assert not r.exists(attempts_key(job_id))


def monitored(r: redis_lib.Redis, do: Callable[[], Any]) -> list[dict[str, Any]]:
    """What clients send to ``r``'s database while ``do()`` runs, up to its WAIT: each command's name, port and first
    argument (a script's SHA)."""
    def run() -> None:
        with pytest.raises(records.NotReplicated):
            do()

    seen = []
    for command in commands(r, run):
        words = [*command["command"].split(), ""]
        seen.append({"name": words[0].upper(), "port": command["client_port"], "sha": words[1].strip('"')})
        if seen[-1]["name"] == "WAIT":
            return seen
    raise AssertionError("unreachable")


@pytest.fixture
def own_connection(r: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    """A client that keeps a connection of its own for single commands (redis-py's ``single_connection_client``):
    its pipelines take another one from the pool, so a write sent outside the pipeline is on another connection."""
    client = redis_lib.Redis(connection_pool=r.connection_pool, single_connection_client=True)
    yield client
    client.close()


def test_a_delivery_and_its_release_are_the_writes_its_wait_covers(r: redis_lib.Redis,
                                                                  own_connection: redis_lib.Redis) -> None:
    """WAIT counts the writes of its own connection, and cannot wait inside MULTI: the finish script and the
    release go on the WAIT's connection, in that order, without MULTI, whatever client the outcomes use."""
    outcomes = Outcomes(own_connection, record_ttl=TTL, replica_acks=1, replica_timeout=0.01)
    conversation = conversation_key("shop", "r1")
    first, second = create(r, {**MESSAGE, "ordered": True}), create(r, {**MESSAGE, "ordered": True})
    r.zadd(conversation, {first: 1, second: 2})
    seen = monitored(r, lambda: outcomes.delivered(first, {"recipient_id": "r1"}, entry(1, "delivered"),
                                                   conversation=conversation))
    scripts = [c for c in seen if c["name"] == "EVALSHA"]
    assert [c["sha"] for c in scripts] == [records.script(r, "finish").sha, records.script(r, "release").sha]
    assert {c["port"] for c in scripts} == {seen[-1]["port"]}
    assert "MULTI" not in [c["name"] for c in seen]


def test_a_batchs_deliveries_are_the_writes_its_wait_covers(r: redis_lib.Redis,
                                                            own_connection: redis_lib.Redis) -> None:
    outcomes = Outcomes(own_connection, record_ttl=TTL, replica_acks=1, replica_timeout=0.01)
    job_ids = [create(r) for _ in range(2)]
    seen = monitored(r, lambda: outcomes.delivered_many(
        [(job_id, {"recipient_id": "r1"}, entry(1, "delivered")) for job_id in job_ids], account="shop"))
    scripts = [c for c in seen if c["name"] == "EVALSHA"]
    assert [c["sha"] for c in scripts] == [records.script(r, "finish").sha] * 2
    assert {c["port"] for c in scripts} == {seen[-1]["port"]}
    assert "MULTI" not in [c["name"] for c in seen]
