"""A message the broker dropped is found and sent: the job record is the source of truth (issue 20).

Celery's Redis transport takes a message with BRPOP and records it as unacknowledged with a second command;
a worker killed between the two loses it. These tests put Redis in exactly that state (the message popped off
the queue list, nothing in ``unacked``) and check that the sweeper publishes it again, that it never does so
for a message still queued or in a worker's hands, and that a second copy never sends twice.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis as redis_lib

import producers
from igsend.core import records
from igsend.core.celery_app import NEW_PRIORITY, get_app, publish, queue_keys
from igsend.core.chunks import job_ids_in
from igsend.core.store import INFLIGHT_KEY, NO_IDEMPOTENCY_KEY, PENDING_KEY, STATS_KEY, job_key
from producers.enqueue import fingerprint
from tests.conftest import environment, queue_depth, received, wait_until
from workers.sweeper import REPUBLISHED, UNACKED_KEY, Sweeper


def _pop_oldest(r: redis_lib.Redis, chunk: int = 1) -> dict:
    """What a worker's BRPOP does: take the oldest message off the queue (and, killed, record nothing); first, as
    the scheduler's leader does, hand the new messages out of their lanes onto the queue (igsend.core.lanes), in
    chunks of ``chunk`` jobs (igsend.core.chunks)."""
    from workers.scheduler import Scheduler

    while Scheduler(r, ahead=1000, chunk=chunk).dispatch():
        pass
    for key in queue_keys():
        raw = r.rpop(key)
        if raw:
            return json.loads(raw)
    raise AssertionError("the queue is empty")


def test_a_message_taken_and_never_recorded_is_republished(private_db: redis_lib.Redis) -> None:
    jobs = [producers.send_text(f"lost{i}", f"message {i}") for i in range(3)]
    lost = _pop_oldest(private_db)
    assert job_ids_in(lost) == [jobs[0].id] and queue_depth(private_db) == 2

    result = Sweeper(private_db, lost_after=0).sweep()
    assert result.republished == [jobs[0].id]  # the two still queued are left alone
    assert queue_depth(private_db) == 3
    assert jobs[0].info()["attempt_log"][-1]["reason"] == REPUBLISHED
    assert private_db.hget(STATS_KEY, "republished_total") == "1"
    assert Sweeper(private_db, lost_after=0).sweep().republished == []  # found once, sent once


def test_a_message_in_a_workers_hands_is_not_republished(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("taken", "being sent right now")
    message = _pop_oldest(private_db)
    private_db.hset(UNACKED_KEY, "tag-1", json.dumps([message, "", "igsend"]))  # kombu's record of it
    assert Sweeper(private_db, lost_after=0).sweep().republished == []
    assert queue_depth(private_db) == 0 and job.status().value == "queued"


def test_a_chunk_taken_and_never_recorded_has_each_of_its_jobs_republished(private_db: redis_lib.Redis) -> None:
    jobs = [producers.send_text(f"lost-chunk{i}", f"message {i}") for i in range(3)]
    lost = _pop_oldest(private_db, chunk=50)  # the three, one igsend.send_chunk
    assert lost["headers"]["task"] == "igsend.send_chunk" and job_ids_in(lost) == [job.id for job in jobs]
    assert queue_depth(private_db) == 0

    result = Sweeper(private_db, lost_after=0).sweep()
    assert sorted(result.republished) == sorted(job.id for job in jobs)
    assert queue_depth(private_db) == 3  # each one again, as igsend.send_message
    assert Sweeper(private_db, lost_after=0).sweep().republished == []


def test_a_chunk_in_a_workers_hands_is_not_republished(private_db: redis_lib.Redis) -> None:
    jobs = [producers.send_text(f"taken-chunk{i}", f"message {i}") for i in range(3)]
    message = _pop_oldest(private_db, chunk=50)
    private_db.hset(UNACKED_KEY, "tag-1", json.dumps([message, "", "igsend"]))  # kombu's record of it
    assert Sweeper(private_db, lost_after=0).sweep().republished == []
    assert queue_depth(private_db) == 0 and {job.status().value for job in jobs} == {"queued"}


def test_a_scheduled_message_lost_once_due_is_republished(private_db: redis_lib.Redis) -> None:
    """A scheduled job the scheduler found due and handed out (through its lane: ``queued`` from then on), whose
    message a worker killed between BRPOP and the unacked write lost: admission never saw it, so it is owed, not
    stale (ops/chaos found one dropped as stale)."""
    from workers.scheduler import Scheduler

    job = producers.send_text("lost-scheduled", "later", send_at=time.time() + 0.6)
    assert job.status().value == "scheduled"
    wait_until(lambda: Scheduler(private_db).tick() > 0, timeout=10)  # due: handed out by the scheduler's leader
    for key in queue_keys():
        private_db.delete(key)  # ... and taken by a worker that died before recording it
    assert job.status().value == "queued"
    assert Sweeper(private_db, lost_after=0).sweep().republished == [job.id]
    assert queue_depth(private_db) == 1


def test_recent_losses_wait_for_lost_after(private_db: redis_lib.Redis) -> None:
    producers.send_text("young", "just now")
    _pop_oldest(private_db)
    assert Sweeper(private_db, lost_after=60).sweep().republished == []  # could still be between commands
    assert Sweeper(private_db, lost_after=0).sweep().republished != []


def test_finished_jobs_leave_the_index_without_a_publish(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("done", "already delivered")
    _pop_oldest(private_db)
    private_db.hset(job_key(job.id), "status", "delivered")
    assert Sweeper(private_db, lost_after=0).sweep().republished == []
    assert private_db.zscore(PENDING_KEY, job.id) is None and queue_depth(private_db) == 0


def test_an_admitted_job_whose_lock_expired_without_an_outcome_is_republished(private_db: redis_lib.Redis) -> None:
    # A crash after admission, with the broker's record of the message gone too (e.g. a Redis restart that
    # lost it): the job would stay "sending" forever. Republished, admission finds it orphaned.
    job = producers.send_text("crashed", "mid-flight")
    _pop_oldest(private_db)
    private_db.zrem(PENDING_KEY, job.id)
    private_db.hset(job_key(job.id), mapping={"status": "sending", "inflight": 1, "attempts": 1})
    private_db.zadd(INFLIGHT_KEY, {job.id: time.time() - 1})  # its lock expired a second ago
    assert Sweeper(private_db, lost_after=0).sweep().republished == [job.id]
    assert queue_depth(private_db) == 1


def test_a_deep_backlog_costs_a_few_commands_per_pass(tmp_path) -> None:
    from igsend.local.embedded_redis import start_redis

    server = start_redis(tmp_path / "redis")  # a Redis of its own: its commandstats count this test's commands only
    try:
        with environment(IGSEND_REDIS_URL=server.url):
            client = redis_lib.Redis.from_url(server.url, decode_responses=True)
            producers.send_many([{"kind": "text", "recipient": f"deep{i}", "text": "x"} for i in range(10_000)])
            _pop_oldest(client)  # handed out of the lanes onto the queue; one lost, too new to count yet
            before = client.info("commandstats")
            started = time.perf_counter()
            result = Sweeper(client, lost_after=60).sweep()
            took = time.perf_counter() - started
            after = client.info("commandstats")
    finally:
        server.stop()
    calls = sum(after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after)
    assert result.republished == [] and result.candidates == 0
    assert calls < 20, calls  # LINDEX per priority list, ZSCOREs, two ZRANGEBYSCOREs (+ INFO itself)
    print(f"sweep over 10,000 queued: {took * 1000:.1f} ms, {calls} commands")


@pytest.mark.usefixtures("worker", "clean")
def test_a_lost_message_is_delivered_by_the_running_workers(r: redis_lib.Redis, sandbox: str) -> None:
    # The job is recorded and indexed as published, but its message never reaches the queue: the state a
    # worker killed between BRPOP and the unacked write leaves behind.
    job_id = str(uuid.uuid4())
    message = {"kind": "text", "recipient": "lost-e2e", "text": "found again", "account": "default"}
    fields = {"id": job_id, "status": "queued", "kind": "text", "account": "default", "recipient": "lost-e2e",
              "message": json.dumps(message), "attempts": 0, "created_at": time.time(),
              "updated_at": time.time(), "idempotency_key": ""}
    records.script(r, "create_job")(keys=[job_key(job_id), NO_IDEMPOTENCY_KEY, PENDING_KEY],
                                   args=[job_id, 3600, 3600, fingerprint(message),
                                         *[x for pair in fields.items() for x in pair]])
    job = producers.Job(job_id)
    assert job.result(timeout=60)["recipient_id"] == "lost-e2e"  # a hang guard, not a speed bound
    assert [a.get("reason") for a in job.info()["attempt_log"]][0] == REPUBLISHED
    assert len(received(sandbox, recipient="lost-e2e")) == 1


@pytest.mark.usefixtures("worker", "clean")
def test_the_same_job_published_twice_is_sent_once(r: redis_lib.Redis, sandbox: str) -> None:
    job = producers.send_text("twice-published", "one DM")
    app = get_app()
    with app.producer_or_acquire() as producer:  # a second copy on purpose, as a republish would make
        publish(app, producer, job.id, {"kind": "text", "recipient": "twice-published", "text": "one DM",
                                        "account": "default"}, priority=NEW_PRIORITY)
    job.result(timeout=30)
    wait_until(lambda: queue_depth(r) == 0, timeout=10)  # the second copy was taken too ...
    time.sleep(1.0)
    assert len(received(sandbox, recipient="twice-published")) == 1  # ... and stood back
