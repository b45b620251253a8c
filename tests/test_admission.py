"""The admission step and the scheduler against a real Redis: slots, parking, holding, stale copies."""

from __future__ import annotations

import json
import threading
import time

import pytest

from igsend.core import records, tracing
from igsend.core.inbound import last_wrote_key
from igsend.core.store import (
    DELAYED_KEY,
    INFLIGHT_KEY,
    PENDING_KEY,
    account_key,
    done_key,
    held_key,
    job_key,
    lock_key,
)
from tests.conftest import queue_depth
from workers.admission import Admitter
from workers.scheduler import MOVING_KEY, Scheduler

MESSAGE = {"kind": "text", "recipient": "r1", "account": "acct", "text": "hi"}


@pytest.fixture
def r(private_db):
    """A database of its own, so the session's worker and its scheduler never see these keys."""
    return private_db


@pytest.fixture
def admitter(r):
    return Admitter(r, max_inline_wait=0.5)


def test_slots_are_spaced_at_the_rate_across_concurrent_callers(admitter, r) -> None:
    rate = 50.0
    decisions = []

    def admit(n: int) -> None:
        decisions.append(admitter.admit(f"job-{n}", MESSAGE, "text", rate))

    threads = [threading.Thread(target=admit, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    go = sorted(d.wait for d in decisions if d.action == "go")
    parked = [d for d in decisions if d.action == "parked"]
    # About 0.5 s of inline waiting at 50/s: some 26 go now (waiting up to 0.5 s); the rest get later slots.
    assert len(go) >= 20 and len(parked) >= 20
    assert len(go) + len(parked) == 60
    assert all(0 <= wait <= 0.5 for wait in go)
    slots = sorted(float(d.detail) for d in parked)
    assert all(b - a >= 1 / rate - 1e-6 for a, b in zip(slots, slots[1:], strict=False))
    assert r.zcard(DELAYED_KEY) == len(parked)


def test_a_parked_job_uses_its_booked_slot_when_it_returns(admitter, r) -> None:
    for n in range(30):
        admitter.admit(f"fill-{n}", MESSAGE, "text", 10.0)  # books 3 s of slots
    parked = admitter.admit("late", MESSAGE, "text", 10.0)
    assert parked.action == "parked"
    assert admitter.admit("late", MESSAGE, "text", 10.0).action == "early"  # a stale copy stands back
    r.hset(job_key("late"), "slot_at", f"{time.time() + 0.1:.6f}")  # as if its time had come
    again = admitter.admit("late", MESSAGE, "text", 10.0)
    assert again.action == "go" and again.wait <= 0.2


def test_final_jobs_are_never_sent_again(admitter, r) -> None:
    first = admitter.admit("once", MESSAGE, "text", 100.0)
    assert first.action == "go" and first.attempt == 1
    assert admitter.admit("once", MESSAGE, "text", 100.0).action == "busy"  # lock held while in flight
    r.hset(job_key("once"), mapping={"status": "delivered", "inflight": ""})
    r.delete(lock_key("once"))
    assert admitter.admit("once", MESSAGE, "text", 100.0).action == "done"


def test_a_post_in_flight_when_its_worker_died_is_orphaned(admitter, r) -> None:
    assert admitter.admit("crash", MESSAGE, "text", 100.0).action == "go"
    r.delete(lock_key("crash"))  # the lock expired: the worker is gone
    decision = admitter.admit("crash", MESSAGE, "text", 100.0)
    assert decision.action == "orphaned" and decision.detail == "1"


def test_broken_account_holds_and_paused_account_defers(admitter, r) -> None:
    r.hset(account_key("acct"), "health", "broken")
    assert admitter.admit("h1", MESSAGE, "text", 100.0).action == "held"
    assert r.zrange(held_key("acct"), 0, -1) == ["h1"]
    r.hdel(account_key("acct"), "health")
    until = time.time() + 5
    r.hset(account_key("acct"), "paused_until", until)
    decision = admitter.admit("p1", MESSAGE, "text", 100.0)
    assert decision.action == "deferred" and abs(float(decision.detail) - until) < 0.01
    assert r.zscore(DELAYED_KEY, "p1") == pytest.approx(until, abs=0.01)


def test_a_raw_job_gets_a_record(admitter, r) -> None:
    assert admitter.admit("raw", MESSAGE, "text", 100.0).action == "go"
    record = r.hgetall(job_key("raw"))
    assert record["status"] == "sending" and record["recipient"] == "r1" and record["attempts"] == "1"


def test_scheduler_moves_due_jobs_once_and_recovers_a_dead_movers_leftovers(r) -> None:
    r.hset(job_key("due"), "message", '{"kind": "text"}')
    r.hset(job_key("later"), "message", '{"kind": "text"}')
    r.hset(job_key("left"), "message", '{"kind": "text"}')
    r.zadd(DELAYED_KEY, {"due": time.time() - 1, "later": time.time() + 60})
    r.rpush(MOVING_KEY, "left")  # as if a mover died between claiming and publishing
    before = queue_depth(r)
    scheduler = Scheduler(r)
    moved = scheduler.tick()
    assert moved == 1
    assert queue_depth(r) - before == 2  # "due" and the leftover "left"
    assert r.zrange(DELAYED_KEY, 0, -1) == ["later"]
    assert r.llen(MOVING_KEY) == 0
    other = Scheduler(r)
    assert other.tick() == 0  # only the lease holder moves


def test_a_scheduled_job_whose_message_the_broker_lost_is_sent_again(r) -> None:
    """Found by tests/test_record_states.py: a scheduled job is published when due with its status still
    ``scheduled``; the sweeper counted that status as not owed a send and dropped the job from igsend:pending, so
    had the broker lost its message, it would have stayed ``scheduled`` for good, in no index."""
    from workers.sweeper import Sweeper

    r.hset(job_key("due-at-nine"), mapping={"status": "scheduled", "message": '{"kind": "text", "recipient": "r1", '
                                                                       '"account": "acct", "text": "hi"}'})
    r.zadd(PENDING_KEY, {"due-at-nine": time.time() - 5})  # claimed when due, published, and lost by the broker
    assert Sweeper(r, lost_after=0).sweep().republished == ["due-at-nine"]
    assert r.zscore(PENDING_KEY, "due-at-nine") is not None


def test_a_copy_admitted_to_send_takes_the_job_out_of_the_delayed_set(admitter, r) -> None:
    """Found by tests/test_record_states.py: a job retrying (due now, in igsend:delayed) whose stale copy reached a
    worker first was sent, and its id stayed in the delayed set: the waiting list showed a job that was sending
    (or delivered), and the scheduler published one more copy of it."""
    r.hset(job_key("retried"), mapping={"status": "retrying", "next_attempt_at": f"{time.time():.6f}"})
    r.zadd(DELAYED_KEY, {"retried": time.time()})
    assert admitter.admit("retried", MESSAGE, "text", 1000.0).action == "go"
    assert r.zscore(DELAYED_KEY, "retried") is None


def test_a_stalled_workers_late_failure_does_not_end_the_attempt_that_replaced_it(admitter, r) -> None:
    """Found by tests/test_record_states.py: a worker stalled past its lock; a copy found the attempt orphaned and
    (IGSEND_UNKNOWN_OUTCOME=resend) POSTed again. The stalled worker then recorded its own attempt's transient
    error: that freed the live second POST's lock and in-flight mark, and the next copy POSTed a third time while
    the second was in flight. Its late refusal dead-lettered the job under the live POST, and after a dead-letter
    as ``unknown`` its late retry turned a final job back to ``retrying``. A late failure now changes nothing."""
    from igsend.core.records import JobStatus, Outcomes
    from igsend.core.store import DLQ_INDEX_KEY, INFLIGHT_KEY

    outcomes = Outcomes(r, record_ttl=3600)
    r.hset(job_key("stalled"), mapping={"id": "stalled", "status": "queued", "attempts": 0})
    first = admitter.admit("stalled", MESSAGE, "text", 1000.0)
    assert first.action == "go"
    r.delete(lock_key("stalled"))  # the first worker stalls past its lock
    assert admitter.admit("stalled", MESSAGE, "text", 1000.0).action == "orphaned"
    outcomes.forget_inflight("stalled")  # resend
    assert admitter.admit("stalled", MESSAGE, "text", 1000.0).action == "go"  # the second POST, in flight

    late = {"attempt": first.attempt, "at": time.time(), "latency_ms": 1.0, "outcome": "transient"}
    outcomes.retry("stalled", time.time() - 1, reason="transient", error={"code": 2}, attempt_entry=late)
    outcomes.dead("stalled", "permanent: refused", {"code": 551}, late)
    assert r.exists(lock_key("stalled")) and r.zscore(INFLIGHT_KEY, "stalled") is not None
    assert r.hget(job_key("stalled"), "status") == "sending"
    assert r.zscore(DLQ_INDEX_KEY, "stalled") is None
    assert admitter.admit("stalled", MESSAGE, "text", 1000.0).action == "busy"  # no third POST

    outcomes.dead("stalled", "outcome unknown", None, {"attempt": 2, "at": time.time(), "outcome": "unknown"},
                  status=JobStatus.UNKNOWN)  # the second attempt's own end is recorded
    outcomes.retry("stalled", time.time() - 1, reason="transient", error={"code": 2}, attempt_entry=late)
    assert r.hget(job_key("stalled"), "status") == "unknown"  # final: only a replay changes it



# --- what each decision carries, the defaults, the send class's own budget, windows, order, replicas, traces ---


def test_the_defaults_lock_a_post_for_30_s_and_wait_in_place_at_most_half_a_second(r) -> None:
    admitter = Admitter(r)
    rate = 1 / 1.4  # a slot every 1.4 s
    first = admitter.admit("d1", MESSAGE, "text", rate)
    assert (first.action, first.wait, first.attempt, first.detail) == ("go", 0.0, 1, "")
    admitted_at = float(r.hget(job_key("d1"), "created_at"))  # a raw job: its record is made as it is admitted
    assert first.created_at == pytest.approx(admitted_at)
    assert 20_000 < r.pttl(lock_key("d1")) <= 30_000
    assert r.zscore(INFLIGHT_KEY, "d1") == pytest.approx(admitted_at + 30, abs=0.01)  # until an outcome, or 30 s
    second = admitter.admit("d2", MESSAGE, "text", rate)  # the next slot is over half a second off: parked
    assert second.action == "parked"
    assert float(second.detail) == pytest.approx(admitted_at + 1.4, abs=0.01)


def test_a_posts_lock_lives_as_long_as_the_caller_asks(admitter, r) -> None:
    assert admitter.admit("short", MESSAGE, "text", 100.0, lock_ttl=12.0).action == "go"
    assert 6_000 < r.pttl(lock_key("short")) <= 12_000


def test_a_booked_slot_used_more_than_a_quarter_second_late_is_booked_anew(r) -> None:
    admitter = Admitter(r)  # late_tolerance 0.25 s by default
    for n in range(3):
        admitter.admit(f"fill-{n}", MESSAGE, "text", 1.0)  # one goes now, the next slots are 1 and 2 s off
    r.hset(job_key("too-late"), mapping={"status": "retrying", "slot_at": f"{time.time() - 0.6:.6f}"})
    assert admitter.admit("too-late", MESSAGE, "text", 1.0).action == "parked"  # the next free slot instead


def test_each_account_and_send_class_has_a_budget_of_its_own(admitter, r) -> None:
    assert admitter.admit("t1", MESSAGE, "text", 1.0).action == "go"
    media = {**MESSAGE, "kind": "image", "url": "https://example.com/a.png"}
    assert admitter.admit("m1", media, "media", 1.0).action == "go"  # a text's slot does not hold up a media send
    assert admitter.admit("o1", {**MESSAGE, "account": "other"}, "text", 1.0).action == "go"  # nor another account's
    assert admitter.admit("t2", MESSAGE, "text", 1.0).action == "parked"


def test_a_delivered_job_compacted_to_its_done_key_is_never_sent_again(admitter, r) -> None:
    r.set(done_key("compacted"), "{}")  # what igsend.core.records keeps of a delivered job
    decision = admitter.admit("compacted", MESSAGE, "text", 100.0)
    assert (decision.action, decision.detail) == ("done", "delivered")
    assert not r.exists(lock_key("compacted"))


def test_a_raw_jobs_record_keeps_its_message_as_written(admitter, r) -> None:
    message = {**MESSAGE, "text": "h\u00e9llo \u2713"}
    assert admitter.admit("raw-utf8", message, "text", 100.0).action == "go"
    record = r.hgetall(job_key("raw-utf8"))
    assert json.loads(record["message"]) == message
    assert "h\u00e9llo \u2713" in record["message"]  # as written, not \\u-escaped
    assert (record["kind"], record["account"], record["recipient"]) == ("text", "acct", "r1")


def test_a_message_whose_window_closed_while_it_waited_is_not_admitted(admitter, r) -> None:
    opened = round(time.time() - 2 * 24 * 3600, 3)  # the caller's last_user_message_at: two days ago
    decision = admitter.admit("stale", {**MESSAGE, "last_user_message_at": opened}, "text", 100.0)
    assert decision.action == "window_closed" and float(decision.detail) == pytest.approx(opened, abs=0.01)
    r.set(last_wrote_key("acct", "r2"), time.time() - 2 * 24 * 3600)  # known from a webhook instead
    assert admitter.admit("stale-2", {**MESSAGE, "recipient": "r2"}, "text", 100.0).action == "window_closed"
    recent = {**MESSAGE, "recipient": "r3", "last_user_message_at": time.time() - 60}
    assert admitter.admit("fresh", recent, "text", 100.0).action == "go"


def test_an_ordered_job_waits_behind_the_head_of_its_conversation(admitter, r) -> None:
    ordered = {**MESSAGE, "ordered": True}
    conversation = records.conversation_of(ordered)
    assert conversation
    r.hset(job_key("head"), mapping={"status": "queued"})
    r.hset(job_key("behind"), mapping={"status": "queued"})
    r.zadd(conversation, {"head": 1, "behind": 2})
    decision = admitter.admit("behind", ordered, "text", 100.0)
    assert (decision.action, decision.detail) == ("waiting", "head")
    r.hset(job_key("head"), "status", "delivered")
    assert admitter.admit("behind", ordered, "text", 100.0).action == "go"


def test_an_admission_no_replica_confirmed_is_not_sent(r) -> None:
    admitter = Admitter(r, replica_acks=1)  # this Redis has no replica; the default timeout is a second
    started = time.monotonic()
    decision = admitter.admit("witness", MESSAGE, "text", 100.0)
    assert time.monotonic() - started >= 0.9  # it waited that long for a replica
    assert (decision.action, decision.attempt) == ("unreplicated", 1)
    assert decision.detail == ("its admission reached 0 of the 1 replica(s) IGSEND_REDIS_REPLICA_ACKS asks for "
                               "within 1 s; not sent, due again in a second")
    fast = Admitter(r, replica_acks=1, replica_timeout=0.05)
    assert fast.admit("witness", MESSAGE, "text", 100.0).action == "busy"  # the lock it took still holds
    assert "within 0.05 s" in fast.admit("witness-2", MESSAGE, "text", 100.0).detail


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch):
    """Traces on, into memory: the spans ended so far."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_started", "tests")
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("tests"))
    return exporter.get_finished_spans


def test_with_traces_on_each_admission_is_a_span_with_its_decision(admitter, r, spans) -> None:
    first = admitter.admit("s1", MESSAGE, "text", 2.5, lock_ttl=12.0)
    second = admitter.admit("s2", MESSAGE, "text", 2.5)  # the next slot, 0.4 s off: awaited in place
    media = admitter.admit("s3", {**MESSAGE, "kind": "image", "url": "https://example.com/a.png"}, "media", 2.5)
    for n in range(4):
        last = admitter.admit(f"s-more-{n}", MESSAGE, "text", 2.5)
    assert (first.action, first.wait, second.action, media.action, last.action) == ("go", 0.0, "go", "go", "parked")
    assert 0 < second.wait <= 0.4
    assert 6_000 < r.pttl(lock_key("s1")) <= 12_000
    found = spans()
    assert [span.name for span in found] == ["igsend.admit"] * 7
    assert dict(found[0].attributes) == {"igsend.send_class": "text", "igsend.admission": "go"}
    assert dict(found[1].attributes) == {"igsend.send_class": "text", "igsend.admission": "go",
                                         "igsend.rate_wait_s": second.wait}
    assert dict(found[2].attributes) == {"igsend.send_class": "media", "igsend.admission": "go"}
    assert dict(found[-1].attributes) == {"igsend.send_class": "text", "igsend.admission": "parked"}
    assert r.hget(job_key("s1"), "status") == "sending"
