"""workers/scheduler.py without a worker: what the dispatcher's leader hands out to the Celery queue, and in which
order and on which of kombu's priority lists, from the due set (retries, booked slots: one ``igsend.send_message``
each on the due list) and from the accounts' lanes (``igsend.send_chunk`` chunks on the new list); who leads; what
a new leader does with a dead one's half-moved ids; how much room the dispatcher keeps; the budgets, the sweep and
the console's waiting chart it keeps up. On the suite's own Redis, in a database no worker consumes
(tests/test_admission.py, tests/test_chunks.py, tests/test_fairness.py and tests/test_scheduled.py run the
scheduler inside real workers)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import pytest
import redis as redis_lib

import producers
from igsend.core import chunks, lanes, series
from igsend.core.celery_app import DUE_PRIORITY, NEW_PRIORITY, PRIORITY_STEPS, queue_keys
from igsend.core.settings import get_settings
from igsend.core.store import DELAYED_KEY, PENDING_KEY, job_key
from tests.conftest import environment, wait_until
from workers.scheduler import LEADER_KEY, MOVING_KEY, Scheduler

SEND_MESSAGE, SEND_CHUNK = "igsend.send_message", chunks.CHUNK_TASK_NAME


@pytest.fixture
def r(private_db: redis_lib.Redis) -> redis_lib.Redis:
    """A database of its own: no worker's scheduler takes these jobs away."""
    return private_db


def handed_out(r: redis_lib.Redis) -> list[tuple[int, str, list[str]]]:
    """What waits on the Celery queue, by priority list in the order workers pop them, oldest first in each: (the
    priority, the task, the jobs it stands for)."""
    out = []
    for priority, key in zip(PRIORITY_STEPS, queue_keys(), strict=True):
        for raw in reversed(r.lrange(key, 0, -1)):
            envelope = json.loads(raw)
            out.append((priority, envelope["headers"]["task"], chunks.job_ids_in(envelope)))
    return out


def due_job(r: redis_lib.Redis, *, status: str = "retrying", account: str | None = "shop", kind: str | None = "text",
            due: float | None = None, message: dict[str, Any] | None = None) -> str:
    """A job record waiting in the due set (a retry, by default), due a second ago."""
    job_id = str(uuid.uuid4())
    fields = {"status": status, "message": json.dumps(message or {"kind": "text", "recipient": "r1",
                                                                  "account": "shop", "text": "hi"})}
    fields.update({name: value for name, value in (("account", account), ("kind", kind)) if value is not None})
    r.hset(job_key(job_id), mapping=fields)
    r.zadd(DELAYED_KEY, {job_id: time.time() - 1 if due is None else due})
    return job_id


def in_lane(r: redis_lib.Redis, account: str, *job_ids: str, send_class: str = "text", score: float = 0) -> None:
    """Jobs waiting in an account's lane (as lua/create_job.lua puts them), the lane ready at ``score``."""
    r.rpush(f"{lanes.lane_key(account, send_class)}:normal", *job_ids)
    r.zadd(lanes.READY_KEY, {lanes.lane_key(account, send_class): score})


# --- the due set ---------------------------------------------------------------------------------------------------


def test_a_due_retry_is_published_on_the_due_list_as_one_send_message(r: redis_lib.Redis) -> None:
    first, second = due_job(r, due=time.time() - 2), due_job(r)
    later = due_job(r, due=time.time() + 60)
    assert Scheduler(r).tick() == 2
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [first]), (DUE_PRIORITY, SEND_MESSAGE, [second])]
    assert r.zrange(DELAYED_KEY, 0, -1) == [later]
    assert r.llen(MOVING_KEY) == 0
    assert set(r.zrange(PENDING_KEY, 0, -1)) == {first, second}  # handed out, not yet admitted by a worker


def test_a_tick_takes_at_most_a_batch_of_due_jobs(r: redis_lib.Redis) -> None:
    jobs = [due_job(r, due=time.time() - 10 + i / 100) for i in range(4)]
    scheduler = Scheduler(r, batch=3)
    assert scheduler.tick() == 3
    assert [ids for _, _, ids in handed_out(r)] == [[job_id] for job_id in jobs[:3]]
    assert scheduler.tick() == 1
    assert [ids for _, _, ids in handed_out(r)] == [[job_id] for job_id in jobs]


def test_a_due_job_whose_record_expired_is_dropped(r: redis_lib.Redis) -> None:
    gone = due_job(r)
    r.delete(job_key(gone))
    kept = due_job(r)
    Scheduler(r).tick()
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [kept])]
    assert r.llen(MOVING_KEY) == 0 and r.zcard(DELAYED_KEY) == 0


def test_a_scheduled_job_that_comes_due_takes_its_turn_in_its_account_s_lane(r: redis_lib.Redis) -> None:
    """Behind what the account queued before, in one chunk on the new list, in the same tick; a retry due at
    the same moment stays on the due list."""
    queued = producers.send_text("sched-unit", "queued first", account="default")
    scheduled = producers.send_text("sched-unit", "at nine", account="default", send_at=time.time() + 3600)
    r.zadd(DELAYED_KEY, {scheduled.id: time.time() - 1})  # nine o'clock has come
    retry = due_job(r, account="default")
    assert Scheduler(r, ahead=100, chunk=10).tick() == 3  # the retry, and the lane's two: each counted once
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [retry]),
                             (NEW_PRIORITY, SEND_CHUNK, [queued.id, scheduled.id])]
    assert r.hget(job_key(scheduled.id), "status") == "queued"
    assert r.llen(MOVING_KEY) == 0


def test_a_due_job_that_cannot_join_a_lane_is_published_as_it_is(r: redis_lib.Redis) -> None:
    """A record that names no account, or a kind of no send class, is no lane's: it goes to the due list."""
    nameless = due_job(r, status="scheduled", account=None)
    odd = due_job(r, status="scheduled", kind="no-such-kind")
    laned = due_job(r, status="scheduled", account="shop")
    assert Scheduler(r, ahead=100, chunk=10).tick() == 3
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [nameless]), (DUE_PRIORITY, SEND_MESSAGE, [odd]),
                             (NEW_PRIORITY, SEND_CHUNK, [laned])]
    assert not list(r.scan_iter(f"{lanes.LANE_PREFIX}None*"))


def test_due_jobs_none_of_which_may_join_a_lane_are_all_published(r: redis_lib.Redis) -> None:
    jobs = [due_job(r, status="retrying", due=time.time() - 2 + i / 100) for i in range(2)]
    Scheduler(r).tick()
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [job_id]) for job_id in jobs]


# --- leadership ----------------------------------------------------------------------------------------------------


def test_only_the_lease_holder_moves_jobs_and_a_new_leader_publishes_what_a_dead_one_left(r: redis_lib.Redis) -> None:
    left = [due_job(r, due=time.time() + 3600) for _ in range(3)]
    r.zrem(DELAYED_KEY, *left)
    r.rpush(MOVING_KEY, *left)  # a leader died between claiming them and publishing them
    r.set(LEADER_KEY, "another-process", px=60_000)
    waiting = due_job(r)
    follower = Scheduler(r)
    assert follower.tick() == 0
    assert handed_out(r) == [] and r.lrange(MOVING_KEY, 0, -1) == left
    assert r.zrange(DELAYED_KEY, 0, -1) == [waiting]
    r.delete(LEADER_KEY)  # the other process's lease ran out
    assert follower.tick() == 1
    assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [job_id]) for job_id in [*left, waiting]]
    assert r.llen(MOVING_KEY) == 0


def test_the_lease_names_its_holder_for_the_lease_s_length_and_is_kept_each_tick(r: redis_lib.Redis) -> None:
    leader = Scheduler(r, lease=30.0)
    leader.tick()
    assert r.get(LEADER_KEY) == leader.me
    assert 29_000 < r.pttl(LEADER_KEY) <= 30_000
    r.pexpire(LEADER_KEY, 5_000)
    leader.tick()
    assert 29_000 < r.pttl(LEADER_KEY) <= 30_000
    other = Scheduler(r)
    assert other.me != leader.me and other.tick() == 0
    assert r.get(LEADER_KEY) == leader.me


def test_the_default_lease_lasts_three_seconds(r: redis_lib.Redis) -> None:
    Scheduler(r).tick()
    assert 2_000 < r.pttl(LEADER_KEY) <= 3_000


def test_a_leader_republishes_the_moving_list_only_when_it_takes_the_lease(r: redis_lib.Redis) -> None:
    """While it leads, what is on the moving list is its own step in flight (or the sweeper's to find)."""
    leader = Scheduler(r)
    leader.tick()
    in_flight = due_job(r, due=time.time() + 3600)
    r.rpush(MOVING_KEY, in_flight)
    leader.tick()
    assert handed_out(r) == [] and r.lrange(MOVING_KEY, 0, -1) == [in_flight]


def test_a_stopped_leader_hands_the_lease_on_at_once_and_a_follower_leaves_it(r: redis_lib.Redis) -> None:
    leader, follower = Scheduler(r), Scheduler(r)
    leader.tick()
    follower.tick()
    follower.stop()
    assert r.get(LEADER_KEY) == leader.me
    leader.stop()
    assert r.get(LEADER_KEY) is None
    job_id = due_job(r)
    assert follower.tick() == 1 and handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [job_id])]


# --- the thread ----------------------------------------------------------------------------------------------------


def test_the_scheduler_s_thread_moves_jobs_until_stopped(r: redis_lib.Redis) -> None:
    scheduler = Scheduler(r)
    before = set(threading.enumerate())
    scheduler.start()
    try:
        # named for py-spy and faulthandler's dumps
        [thread] = [t for t in threading.enumerate() if t not in before and t.name == "igsend-scheduler"]
        assert thread.daemon  # never keeps a worker process from exiting
        first = due_job(r)
        wait_until(lambda: handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [first])], timeout=30)
        second = due_job(r)
        wait_until(lambda: len(handed_out(r)) == 2, timeout=30)
        assert handed_out(r)[1] == (DUE_PRIORITY, SEND_MESSAGE, [second])
    finally:
        scheduler.stop()
    assert not thread.is_alive()
    assert r.get(LEADER_KEY) is None
    due_job(r)
    time.sleep(0.2)  # proves a negative: a stopped scheduler moves nothing
    assert len(handed_out(r)) == 2


def test_a_failed_tick_is_logged_and_the_thread_goes_on(r: redis_lib.Redis, caplog: pytest.LogCaptureFixture) -> None:
    broken = due_job(r)
    r.hset(job_key(broken), "message", "{not json")
    scheduler = Scheduler(r)
    with caplog.at_level(logging.ERROR, logger="igsend.scheduler"):
        scheduler.start()
        try:
            wait_until(lambda: "scheduler tick failed; retrying" in caplog.messages, timeout=30)
            after = due_job(r)
            wait_until(lambda: [ids for _, _, ids in handed_out(r)] == [[after]], timeout=30)
        finally:
            scheduler.stop()


def test_an_idle_scheduler_waits_its_interval_between_ticks(r: redis_lib.Redis) -> None:
    """Nothing to move: the thread asks Redis once per interval, not in a busy loop."""

    class Counted(Scheduler):
        ticks = 0

        def tick(self) -> int:
            self.ticks += 1
            return super().tick()

    scheduler = Counted(r, interval=0.1)
    started = time.monotonic()
    scheduler.start()
    try:
        wait_until(lambda: scheduler.ticks >= 3, timeout=30)
    finally:
        scheduler.stop()
    elapsed = time.monotonic() - started
    assert scheduler.ticks <= elapsed / 0.1 + 2  # the first at once, then one an interval (a rounding more)


def test_stopping_a_scheduler_never_started_releases_nothing(r: redis_lib.Redis) -> None:
    r.set(LEADER_KEY, "another-process")
    Scheduler(r).stop()
    assert r.get(LEADER_KEY) == "another-process"


# --- the lanes: room, chunks, order -------------------------------------------------------------------------------


def test_the_dispatcher_hands_out_chunks_of_the_lanes_up_to_ahead(r: redis_lib.Redis) -> None:
    in_lane(r, "shop", "s1", "s2", "s3", "s4", "s5")
    in_lane(r, "blog", "b1", score=10)
    scheduler = Scheduler(r, ahead=4, chunk=2)
    assert scheduler.dispatch() == 4
    assert handed_out(r) == [(NEW_PRIORITY, SEND_CHUNK, ["s1", "s2"]), (NEW_PRIORITY, SEND_CHUNK, ["s3", "s4"])]
    assert r.llen(MOVING_KEY) == 0 and r.zcard(PENDING_KEY) == 4
    assert scheduler.dispatch() == 0  # no room until a worker's admission takes some
    r.zrem(PENDING_KEY, "s1", "s2")
    assert scheduler.dispatch() == 2
    assert handed_out(r)[2:] == [(NEW_PRIORITY, SEND_CHUNK, ["s5"]), (NEW_PRIORITY, SEND_CHUNK, ["b1"])]


@pytest.mark.parametrize(("pending", "handed"), [(6, 4), (7, 0)])
def test_the_dispatcher_waits_for_a_chunk_s_worth_of_room(r: redis_lib.Redis, pending: int, handed: int) -> None:
    r.zadd(PENDING_KEY, {f"p{i}": time.time() for i in range(pending)})
    in_lane(r, "shop", *(f"s{i}" for i in range(8)))
    assert Scheduler(r, ahead=10, chunk=4).dispatch() == handed
    assert sum(len(ids) for _, _, ids in handed_out(r)) == handed


def test_with_room_for_less_than_a_chunk_the_dispatcher_fills_ahead(r: redis_lib.Redis) -> None:
    in_lane(r, "shop", "s1", "s2", "s3", "s4")
    assert Scheduler(r, ahead=3, chunk=50).dispatch() == 3
    assert handed_out(r) == [(NEW_PRIORITY, SEND_CHUNK, ["s1", "s2", "s3"])]


def test_one_step_hands_out_at_most_a_batch(r: redis_lib.Redis) -> None:
    in_lane(r, "shop", *(f"s{i}" for i in range(8)))
    assert Scheduler(r, ahead=100, chunk=50, batch=5).dispatch() == 5
    assert handed_out(r) == [(NEW_PRIORITY, SEND_CHUNK, [f"s{i}" for i in range(5)])]


def test_a_step_hands_out_at_most_500_by_default(r: redis_lib.Redis) -> None:
    in_lane(r, "shop", *(f"s{i}" for i in range(501)))
    assert Scheduler(r, ahead=1000, chunk=1000).dispatch() == 500
    assert handed_out(r) == [(NEW_PRIORITY, SEND_CHUNK, [f"s{i}" for i in range(500)])]


def test_a_scheduler_moves_and_sweeps_the_redis_it_is_given(r: redis_lib.Redis) -> None:
    """Its jobs in another database than IGSEND_REDIS_URL's (the Celery queue stays there)."""
    kwargs = r.connection_pool.connection_kwargs
    other = redis_lib.Redis(host=kwargs["host"], port=kwargs["port"], db=2, decode_responses=True)
    other.flushdb()
    try:
        due = due_job(other)
        lost = due_job(other, status="queued")
        other.zrem(DELAYED_KEY, lost)
        other.zadd(PENDING_KEY, {lost: time.time() - 30})  # handed out 30 s ago, never reached a worker
        assert Scheduler(other, lost_after=10).tick() == 1
        assert handed_out(r) == [(DUE_PRIORITY, SEND_MESSAGE, [due]), (DUE_PRIORITY, SEND_MESSAGE, [lost])]
        assert other.zcard(DELAYED_KEY) == 0 and r.get(LEADER_KEY) is None
    finally:
        other.flushdb()


def test_nothing_in_the_lanes_is_nothing_handed_out(r: redis_lib.Redis) -> None:
    assert Scheduler(r, ahead=10, chunk=2).dispatch() == 0
    assert handed_out(r) == [] and r.llen(MOVING_KEY) == 0


@pytest.mark.parametrize(("empty", "handed"), [(4 * 2 + 100 - 1, 2), (4 * 2 + 100, 0)])
def test_a_step_gives_up_after_four_turns_per_message_wanted_and_a_hundred(r: redis_lib.Redis, empty: int,
                                                                        handed: int) -> None:
    """Lanes that turn out empty cost a turn each: a dispatcher step that may hand out 2 messages takes at most
    108 turns, so they never hold the leader's Redis for long (the next step goes on)."""
    for i in range(empty):
        r.zadd(lanes.READY_KEY, {lanes.lane_key(f"gone{i}", "text"): i})
    in_lane(r, "shop", "s1", "s2", score=10_000)
    assert Scheduler(r, ahead=2, chunk=2).dispatch() == handed
    assert sum(len(ids) for _, _, ids in handed_out(r)) == handed


def test_a_step_brings_back_at_most_a_thousand_paced_lanes(r: redis_lib.Redis) -> None:
    """Lanes ahead of their budget wait in the paced set; those whose time came rejoin, a thousand per step."""
    r.zadd(lanes.PACED_KEY, {lanes.lane_key(f"paced{i}", "text"): time.time() - 10 for i in range(1001)})
    scheduler = Scheduler(r, ahead=1, chunk=1)
    scheduler.dispatch()
    assert r.zcard(lanes.PACED_KEY) == 1
    scheduler.dispatch()
    assert r.zcard(lanes.PACED_KEY) == 0


def test_with_replica_acks_each_job_is_one_send_message_on_the_new_list(r: redis_lib.Redis) -> None:
    """IGSEND_REDIS_REPLICA_ACKS: no chunks (producers/enqueue.py takes a job back by its own message)."""
    in_lane(r, "shop", "s1", "s2", "s3")
    for job_id in ("s1", "s2", "s3"):
        r.hset(job_key(job_id), "message", json.dumps({"kind": "text", "recipient": "r1", "text": job_id}))
    with environment(IGSEND_REDIS_REPLICA_ACKS="1"):
        assert Scheduler(r, ahead=10, chunk=2).dispatch() == 3
        assert handed_out(r) == [(NEW_PRIORITY, SEND_MESSAGE, [job_id]) for job_id in ("s1", "s2", "s3")]
        assert r.llen(MOVING_KEY) == 0


def test_the_defaults_keep_the_settings_room_and_chunk_on_igsend_s_redis(r: redis_lib.Redis) -> None:
    settings = get_settings()
    in_lane(r, "shop", *(f"s{i}" for i in range(settings.dispatch_ahead + 1)))
    assert Scheduler().dispatch() == settings.dispatch_ahead  # IGSEND_REDIS_URL: this test's database
    sizes = [len(ids) for _, _, ids in handed_out(r)]
    assert max(sizes) == settings.chunk and sum(sizes) == settings.dispatch_ahead


# --- what the leader keeps up: budgets, the sweep, the waiting chart ---------------------------------------------


def test_every_process_records_its_accounts_budgets_once_a_sweep_interval(r: redis_lib.Redis) -> None:
    r.set(LEADER_KEY, "another-process")  # a follower records them too
    scheduler = Scheduler(r, budgets={("shop", "text"): 7.0, ("shop", "media"): 1.5}, sweep_every=3600)
    scheduler.tick()
    assert r.hgetall(lanes.RATE_KEY) == {lanes.lane_key("shop", "text"): "7.0",
                                         lanes.lane_key("shop", "media"): "1.5"}
    r.delete(lanes.RATE_KEY)  # a Redis flush
    scheduler.tick()
    assert r.hgetall(lanes.RATE_KEY) == {}
    again = Scheduler(r, budgets={("shop", "text"): 7.0}, sweep_every=0)
    again.tick()
    r.delete(lanes.RATE_KEY)
    again.tick()
    assert r.hgetall(lanes.RATE_KEY) == {lanes.lane_key("shop", "text"): "7.0"}


def test_a_message_the_broker_lost_is_published_again_by_the_leader_s_sweep(r: redis_lib.Redis) -> None:
    lost_after = get_settings().lost_after

    def lost(seconds_ago: float) -> str:
        job_id = due_job(r, status="queued")
        r.zrem(DELAYED_KEY, job_id)
        r.zadd(PENDING_KEY, {job_id: time.time() - seconds_ago})  # handed out, and never reached a worker
        return job_id

    old, recent = lost(lost_after + 30), lost(lost_after - 30)
    scheduler = Scheduler(r)
    scheduler.tick()
    assert [ids for _, _, ids in handed_out(r)] == [[old]]
    lost(lost_after + 30)
    scheduler.tick()  # the next sweep is a sweep interval later
    assert [ids for _, _, ids in handed_out(r)] == [[old]]
    assert recent in r.zrange(PENDING_KEY, 0, -1)


def test_the_sweep_runs_every_sweep_interval_with_the_scheduler_s_lost_after(r: redis_lib.Redis) -> None:
    scheduler = Scheduler(r, sweep_every=0, lost_after=2.0)
    scheduler.tick()
    job_id = due_job(r, status="queued")
    r.zrem(DELAYED_KEY, job_id)
    r.zadd(PENDING_KEY, {job_id: time.time() - 3})
    scheduler.tick()
    assert [ids for _, _, ids in handed_out(r)] == [[job_id]]


def test_the_waiting_chart_is_written_once_a_minute(r: redis_lib.Redis) -> None:
    in_lane(r, "shop", *(f"s{i}" for i in range(5)))
    in_lane(r, "shop", "m1", send_class="media", score=1)
    in_lane(r, "blog", "b1", "b2", score=2)
    minute = int(time.time() // 60)
    scheduler = Scheduler(r, ahead=1, chunk=1)
    scheduler.tick()  # hands out s0
    in_lane(r, "blog", "b3", score=3)
    scheduler.tick()  # no room: nothing handed out, and the chart is not written again within the minute
    if int(time.time() // 60) != minute:
        pytest.skip("a minute began between the ticks")
    at = time.time()
    assert series.read(r, "shop", minutes=1, now=at).waiting == [4 + 1]
    assert series.read(r, "blog", minutes=1, now=at).waiting == [2]
    assert series.read(r, minutes=1, now=at).waiting == [7]
