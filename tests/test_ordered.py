"""Ordered conversations: one account's ordered messages to one recipient reach Meta in enqueue order through
retries, throttling, scheduled neighbours and cancels, while other conversations go in parallel; a dead message
lets the next go, or holds the conversation until an operator replays or releases it."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import requests

from igsend.core.presence import Presence
from producers import JobStatus, send_many, send_text
from producers.enqueue import check_sendable
from tests.conftest import received, reset_client_caches, wait_until, worker_env

TRANSIENT = {"code": 2, "is_transient": True, "message": "An unexpected error has occurred."}
NO_SUCH_USER = {"code": 100, "subcode": 2018001, "message": "No matching user found"}


def texts(sandbox: str, recipient: str) -> list[str]:
    """What Meta (the sandbox) accepted for ``recipient``, in the order it accepted it."""
    return [m["body"]["message"]["text"] for m in received(sandbox)
            if m["body"]["recipient"].get("id") == recipient and "text" in m["body"].get("message", {})]


def faults(sandbox: str, recipient: str, *scripted: dict) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(scripted)},
                  timeout=5).raise_for_status()


def conversation(recipient: str, count: int, *, ordered: bool = True, account: str = "default") -> list[dict]:
    return [{"kind": "text", "recipient": recipient, "text": str(i), "ordered": ordered, "account": account}
            for i in range(1, count + 1)]


def finish(jobs: list) -> None:
    for job in jobs:
        job.wait(timeout=60)


@pytest.mark.usefixtures("worker", "clean")
def test_a_conversation_arrives_in_enqueue_order_through_retries(sandbox: str) -> None:
    faults(sandbox, "ordered-retry", TRANSIENT, TRANSIENT)  # the first message fails twice, then goes
    batch = send_many(conversation("ordered-retry", 5))
    finish(batch.queued)
    assert texts(sandbox, "ordered-retry") == ["1", "2", "3", "4", "5"]
    assert batch.queued[0].info()["attempts"] == 3


@pytest.mark.usefixtures("worker", "clean")
def test_without_ordered_a_retry_is_overtaken(sandbox: str) -> None:
    """The same conversation unordered: what the test above guards against does happen."""
    faults(sandbox, "unordered-retry", TRANSIENT, TRANSIENT)
    batch = send_many(conversation("unordered-retry", 5, ordered=False))
    finish(batch.queued)
    assert sorted(texts(sandbox, "unordered-retry")) == ["1", "2", "3", "4", "5"]
    assert texts(sandbox, "unordered-retry")[0] != "1"


@pytest.mark.usefixtures("worker", "clean")
def test_many_conversations_in_parallel_each_in_order(sandbox: str) -> None:
    people = [f"ordered-many-{i}" for i in range(20)]
    for person in people[::4]:
        faults(sandbox, person, TRANSIENT)
    documents = [doc for person in people for doc in conversation(person, 5)]
    # interleaved, as many apps would enqueue them: each conversation's own order kept, conversations mixed
    rng = random.Random(7)
    pending = {person: conversation(person, 5) for person in people}
    mixed = []
    while pending:
        person = rng.choice(sorted(pending))
        mixed.append(pending[person].pop(0))
        if not pending[person]:
            del pending[person]
    assert len(mixed) == len(documents)
    finish(send_many(mixed).queued)
    for person in people:
        assert texts(sandbox, person) == ["1", "2", "3", "4", "5"], person


@pytest.mark.usefixtures("worker", "clean")
def test_a_throttled_account_keeps_the_order(sandbox: str) -> None:
    """The `slow` account sends 4 messages/s: most of the conversation is parked for a rate slot on the way."""
    finish(send_many(conversation("ordered-slow", 8, account="slow")).queued)
    assert texts(sandbox, "ordered-slow") == [str(i) for i in range(1, 9)]


@pytest.mark.usefixtures("worker", "clean")
def test_a_dead_message_lets_the_next_go(sandbox: str) -> None:
    first = send_text("ordered-dead", "1", ordered=True)
    first.result(timeout=30)
    faults(sandbox, "ordered-dead", NO_SUCH_USER)  # the next send, message 2, is refused for good
    batch = send_many(conversation("ordered-dead", 4)[1:])
    finish(batch.queued)
    assert batch.queued[0].status() is JobStatus.DEAD
    assert texts(sandbox, "ordered-dead") == ["1", "3", "4"]


@pytest.mark.usefixtures("worker", "clean")
def test_cancelling_a_scheduled_message_lets_the_next_go(sandbox: str) -> None:
    later = send_text("ordered-cancel", "1", ordered=True, send_at=time.time() + 120)
    after = send_text("ordered-cancel", "2", ordered=True)
    wait_until(lambda: "waiting for job" in (after.info().get("reason") or ""), timeout=10)
    assert after.status() is JobStatus.QUEUED and texts(sandbox, "ordered-cancel") == []
    later.cancel()
    assert after.result(timeout=10)["message_id"]
    assert texts(sandbox, "ordered-cancel") == ["2"]


def test_an_account_can_order_all_its_conversations() -> None:
    """``ordered = true`` for an account in the workers' accounts file: its messages are ordered by default."""
    known = Presence(workers={"w": {"accounts": [{"name": "shop", "ordered": True}, {"name": "other"}]}})
    plain = {"kind": "text", "recipient": "r", "text": "hi"}
    message = {**plain, "account": "shop"}
    check_sendable(known, message)
    assert message["ordered"] is True
    unordered = {**message, "ordered": False}
    check_sendable(known, unordered)
    assert unordered["ordered"] is False
    other = {**plain, "account": "other"}
    check_sendable(known, other)
    assert "ordered" not in other


def test_a_held_conversation_waits_for_replay_or_release(tmp_path: Path, redis_url: str, sandbox: str,
                                                         accounts_file: Path) -> None:
    """IGSEND_ORDERED_DEAD=hold: the next message waits behind the dead one until an operator acts."""
    import os

    from igsend.core import dlq
    from igsend.local.processes import start_worker

    url = redis_url.rsplit("/", 1)[0] + "/3"  # a database of its own: the session's worker does not hold
    previous = os.environ["IGSEND_REDIS_URL"]
    os.environ["IGSEND_REDIS_URL"] = url
    reset_client_caches()
    env = worker_env(url, sandbox, accounts_file, IGSEND_ORDERED_DEAD="hold")
    worker = start_worker(env=env, concurrency=4, log_path=tmp_path / "worker.log")
    try:
        requests.delete(f"{sandbox}/_sandbox/messages", timeout=5)
        faults(sandbox, "ordered-hold", NO_SUCH_USER)
        batch = send_many(conversation("ordered-hold", 3))
        dead, second, third = batch.queued
        assert dead.wait(timeout=30) is JobStatus.DEAD
        assert "its ordered conversation waits until `igsend dlq replay" in dead.info()["reason"]
        assert dlq.show(dead.id)["reason"] == dead.info()["reason"]
        time.sleep(1.5)
        assert second.status() is JobStatus.QUEUED and texts(sandbox, "ordered-hold") == []
        assert f"waiting for job {dead.id}" in second.info()["reason"]
        assert dlq.release(dead.id) == second.id
        assert second.result(timeout=20) and third.result(timeout=20)
        assert texts(sandbox, "ordered-hold") == ["2", "3"]
        with pytest.raises(LookupError):
            dlq.release(dead.id)
    finally:
        worker.stop()
        os.environ["IGSEND_REDIS_URL"] = previous
        reset_client_caches()


def test_a_dead_message_replayed_after_it_let_the_next_go_is_sent_not_parked(private_db) -> None:
    """Found by tests/test_record_states.py: with IGSEND_ORDERED_DEAD=continue a dead message leaves its
    conversation; replayed, its admission parked it behind the conversation's next message (``waiting for job``),
    which it is not part of any more, so that message's end made nothing due: the replayed one stayed ``queued``,
    in no index, for good. It now goes like any replayed message."""
    from igsend.core import dlq, records
    from igsend.core.store import job_key
    from workers.admission import Action, Admitter

    first, second = send_text("replayed", "1", ordered=True), send_text("replayed", "2", ordered=True)
    message = {"kind": "text", "account": "default", "recipient": "replayed", "ordered": True, "text": "1"}
    admitter, outcomes = Admitter(private_db), records.Outcomes(private_db, record_ttl=3600)
    assert admitter.admit(first.id, message, "text", 1000.0).action is Action.GO
    outcomes.dead(first.id, "permanent: refused", None, None, conversation=records.conversation_of(message))
    assert private_db.hget(job_key(second.id), "waiting_for") is None  # released: the next one may go
    assert dlq.replay(first.id, client=private_db)
    assert admitter.admit(first.id, message, "text", 1000.0).action is Action.GO
