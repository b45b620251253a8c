"""Idempotency keys mean what Stripe's mean: the same key with the same message is the same job, the same key
with a different message is refused, and a batch counts a repeated key exactly. Against a real Redis database
that no worker consumes, so queue depths are exact."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner

import producers
from igsend.core.store import idempotency_key
from producers import IdempotencyConflict, IgsendError, send_many, send_text
from tests.conftest import queue_depth


@pytest.fixture
def r(private_db):
    return private_db


def test_same_key_different_message_is_refused_and_queues_nothing(r) -> None:
    first = send_text("idem-a", "pay 10", idempotency_key="order-1")
    before = queue_depth(r)
    with pytest.raises(IdempotencyConflict) as caught:
        send_text("idem-a", "pay 1000", idempotency_key="order-1")
    assert caught.value.job_id == first.id and caught.value.key == "order-1"
    assert first.id in str(caught.value)
    assert isinstance(caught.value, IgsendError)
    assert queue_depth(r) == before
    # Another recipient is another message too, and another account is another key space.
    with pytest.raises(IdempotencyConflict):
        send_text("idem-b", "pay 10", idempotency_key="order-1")
    assert send_text("idem-a", "pay 1000", idempotency_key="order-1", account="shop") != first


def test_same_key_same_message_is_the_same_job(r) -> None:
    first = producers.react("idem-a", "MID-1", idempotency_key="react-1")
    # Defaults are filled in before the fingerprint, so spelling out the default is the same message.
    again = producers.send({"kind": "react", "recipient": "idem-a", "message_id": "MID-1", "reaction": "love",
                            "idempotency_key": "react-1"})
    assert again == first
    assert queue_depth(r) == 1


def test_a_key_claimed_before_fingerprints_still_answers_its_job(r) -> None:
    # Keys written by the previous release hold the bare job id; within their window they must keep working.
    r.set(idempotency_key("default", "legacy-1"), "job-from-before", ex=60)
    assert send_text("idem-a", "anything", idempotency_key="legacy-1").id == "job-from-before"
    assert queue_depth(r) == 0


def test_racing_calls_with_one_key_and_different_messages_make_one_job(r) -> None:
    outcomes: list[object] = []

    def call(n: int) -> None:
        try:
            outcomes.append(send_text("idem-race", f"text {n % 2}", idempotency_key="race-1"))
        except IdempotencyConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = {o.id for o in outcomes if isinstance(o, producers.Job)}
    conflicts = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    assert len(jobs) == 1 and len(outcomes) == 20
    assert len(conflicts) == 10 and {c.job_id for c in conflicts} == jobs
    assert queue_depth(r) == 1


def test_batch_counts_a_repeated_key_once(r) -> None:
    doc = {"kind": "text", "recipient": "idem-batch", "text": "once", "idempotency_key": "batch-1"}
    other = {"kind": "text", "recipient": "idem-batch", "text": "other"}
    batch = send_many([doc, dict(doc), other, dict(doc)])
    assert len(batch.queued) == 2 and batch.duplicates == {1, 3} and not batch.errors
    assert batch.jobs[0] == batch.jobs[1] == batch.jobs[3] != batch.jobs[2]
    assert queue_depth(r) == 2
    # Sent again later: all three are duplicates of the first job, nothing new for them.
    again = send_many([doc, doc])
    assert again.queued == [] and again.duplicates == {0, 1} and again.jobs == [batch.jobs[0]] * 2
    assert queue_depth(r) == 2


def test_batch_reports_a_conflict_for_the_later_message_only(r) -> None:
    doc = {"kind": "text", "recipient": "idem-batch", "text": "first", "idempotency_key": "batch-2"}
    batch = send_many([doc, {**doc, "text": "second"}, {"kind": "sticker"}])
    assert [job is not None for job in batch.jobs] == [True, False, False]
    assert isinstance(batch.conflicts[1], IdempotencyConflict) and batch.conflicts[1].job_id == batch.jobs[0].id
    assert list(batch.invalid) == [2]
    assert len(batch.queued) == 1 and queue_depth(r) == 1


def test_cli_refuses_a_reused_key_with_exit_1(r) -> None:
    from igsend.cli import main

    runner = CliRunner()
    first = runner.invoke(main, ["send", "text", "idem-cli", "hello", "--idempotency-key", "cli-1"])
    same = runner.invoke(main, ["send", "text", "idem-cli", "hello", "--idempotency-key", "cli-1"])
    other = runner.invoke(main, ["send", "text", "idem-cli", "goodbye", "--idempotency-key", "cli-1"])
    assert first.exit_code == 0 and same.output == first.output
    assert other.exit_code == 1
    assert other.output.startswith("error: idempotency key 'cli-1' was already used for a different message")


def test_every_producer_error_is_an_igsend_error() -> None:
    from marshmallow import ValidationError

    from workers.accounts import AccountError
    from workers.tasks import DeadLettered

    for name in ("EnqueueError", "IdempotencyConflict", "JobError", "JobNotFound", "MessageDead", "OutcomeUnknown",
                 "ReplayRefused", "InvalidMessage", "RedisFull", "JobCancelled"):
        assert issubclass(getattr(producers, name), IgsendError), name
    assert issubclass(producers.InvalidMessage, ValidationError)  # marshmallow's field messages, as documented
    assert issubclass(AccountError, IgsendError) and issubclass(DeadLettered, IgsendError)
    assert issubclass(producers.JobNotFound, LookupError) and issubclass(producers.EnqueueError, RuntimeError)
    assert {"IgsendError", "IdempotencyConflict", "ReplayRefused"} <= set(producers.__all__)


def test_a_message_a_worker_took_before_the_replicas_answered_keeps_its_job_under_its_key(
        r, monkeypatch: pytest.MonkeyPatch) -> None:
    """IGSEND_REDIS_REPLICA_ACKS with no replica answering (this Redis has none): the call is refused with
    NotReplicated. A message a worker took in the meantime may be on its way to Meta: with an idempotency key it
    keeps its job, which the caller's second call gets back (not a second message); without one it is cancelled."""
    from igsend.core import records
    from igsend.core.celery_app import queue_keys
    from igsend.core.store import forget_connections, job_key
    from producers.enqueue import NotReplicated

    monkeypatch.setenv("IGSEND_REDIS_REPLICA_ACKS", "1")
    monkeypatch.setenv("IGSEND_REDIS_REPLICA_TIMEOUT", "0.05")
    forget_connections()
    waited = records.wait_for_replicas

    def a_worker_takes_the_messages_first(pipe, replicas: int, timeout: float) -> None:
        from workers.scheduler import Scheduler

        while Scheduler(r, ahead=1000).dispatch():  # the dispatcher hands them out of their lanes ...
            pass
        for key in queue_keys():  # ... and a worker's fetch takes them: the messages leave the queue lists
            r.delete(key)
        waited(pipe, replicas, timeout)

    monkeypatch.setattr(records, "wait_for_replicas", a_worker_takes_the_messages_first)
    documents = [{"kind": "text", "recipient": "idem-taken", "text": "keyed", "idempotency_key": "taken-1"},
                 {"kind": "text", "recipient": "idem-taken", "text": "no key"}]
    with pytest.raises(NotReplicated) as caught:
        send_many(documents)
    assert "same idempotency keys" in str(caught.value)
    keyed_job = r.get(idempotency_key("default", "taken-1")).split("|")[0]
    assert r.hget(job_key(keyed_job), "status") == "queued"  # left to the worker that has it
    statuses = [r.hget(key, "status") for key in r.scan_iter(job_key("*")) if key != job_key(keyed_job)]
    assert statuses == ["cancelled"]  # the keyless one: refused when a worker runs it

    monkeypatch.setenv("IGSEND_REDIS_REPLICA_ACKS", "0")  # the replicas are back
    monkeypatch.setattr(records, "wait_for_replicas", waited)
    forget_connections()
    again = send_many(documents[:1])
    assert again.duplicates == {0} and again.jobs[0].id == keyed_job
