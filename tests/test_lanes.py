"""igsend.core.lanes against the suite's Redis, without a worker: the keys a lane's scripts get, the budgets the
workers record for the dispatcher, and what waits in each lane (tests/test_fairness.py drives lanes end to end)."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from igsend.core import lanes


@pytest.fixture
def r(private_db: redis_lib.Redis) -> redis_lib.Redis:
    """A database of its own: no worker's dispatcher takes these lanes away."""
    return private_db


def _lane(r: redis_lib.Redis, account: str, send_class: str, *, normal: int = 0, bulk: int = 0,
          paced: bool = False) -> None:
    """A lane with work, as lua/create_job.lua leaves it: job ids in its lists, the lane in the ready set (or the
    paced set, scored by when it may go again)."""
    lane = lanes.lane_key(account, send_class)
    for priority, count in (("normal", normal), ("bulk", bulk)):
        if count:
            r.rpush(f"{lane}:{priority}", *[f"{account}-{send_class}-{priority}-{n}" for n in range(count)])
    if paced:
        r.zadd(lanes.PACED_KEY, {lane: time.time() + 60})
    else:
        r.zadd(lanes.READY_KEY, {lane: 0})


def test_a_lane_is_one_accounts_send_class() -> None:
    assert lanes.lane_key("shop", "text") == f"{lanes.LANE_PREFIX}shop|text"
    assert lanes.lane_key("shop", "text") != lanes.lane_key("shop", "media") != lanes.lane_key("blog", "media")
    assert lanes.lane_keys("shop", "media") == [lanes.lane_key("shop", "media"), lanes.READY_KEY, lanes.PACED_KEY,
                                                lanes.CLOCK_KEY]


def test_the_budgets_are_recorded_per_lane(r: redis_lib.Redis) -> None:
    lanes.set_rates(r, {("shop", "text"): 20.0, ("shop", "media"): 2.5, ("blog", "text"): 1.0})
    assert r.hgetall(lanes.RATE_KEY) == {lanes.lane_key("shop", "text"): "20.0",
                                         lanes.lane_key("shop", "media"): "2.5",
                                         lanes.lane_key("blog", "text"): "1.0"}
    lanes.set_rates(r, {})  # nothing to record (Redis refuses an HSET without a field)
    assert r.hlen(lanes.RATE_KEY) == 3


def test_nothing_waits_in_no_lane(r: redis_lib.Redis) -> None:
    assert lanes.waiting(r) == {}
    assert lanes.waiting_total(r) == 0


def test_what_waits_in_each_ready_or_paced_lane_by_class_and_priority(r: redis_lib.Redis) -> None:
    _lane(r, "shop", "text", normal=2, bulk=5)
    _lane(r, "shop", "media", normal=1)
    _lane(r, "news", "text", bulk=4)
    _lane(r, "blog", "private_reply", bulk=3, paced=True)
    _lane(r, "blog", "text", normal=6, paced=True)
    _lane(r, "team|eu", "text", normal=1, paced=True)  # the send class is after the last '|'
    assert lanes.waiting(r) == {"shop": {"text/normal": 2, "text/bulk": 5, "media/normal": 1},
                                "news": {"text/bulk": 4},
                                "blog": {"private_reply/bulk": 3, "text/normal": 6},
                                "team|eu": {"text/normal": 1}}
    assert lanes.waiting_total(r) == 22
