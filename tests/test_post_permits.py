"""The POST permits of a worker process (workers/chunked.py ``_Lanes``): chunks admit in the order they arrived,
a chunk gathers a batch of free threads before admitting, and a permit given back wakes the oldest chunk only when
it can go on. Threads and counts; no test bounds how long anything takes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.conftest import wait_until
from workers.chunked import _Lanes


@pytest.fixture
def lanes() -> Iterator[_Lanes]:
    permits = _Lanes(8)
    yield permits
    permits.pool.shutdown()


def _take_in_thread(lanes: _Lanes, token: object, wanted: int, enough: int, taken: list[int]) -> threading.Thread:
    thread = threading.Thread(target=lambda: taken.append(lanes.take(token, wanted, enough, None)), daemon=True)
    thread.start()
    return thread


def test_a_chunk_takes_what_is_free_up_to_what_it_wants(lanes: _Lanes) -> None:
    chunk = lanes.join()
    assert lanes.take(chunk, 5, 1, None) == 5
    assert lanes.take(chunk, 5, 1, None) == 3  # the last three
    assert lanes.take(chunk, 1, 1, 0.01) == 0  # none free within its timeout
    lanes.give(2)
    assert lanes.take(chunk, 4, 1, None) == 2


def test_only_the_oldest_chunk_admitting_takes_permits(lanes: _Lanes) -> None:
    first, second = lanes.join(), lanes.join()
    assert lanes.take(second, 1, 1, 0.01) == 0  # free permits, but an older chunk is still admitting
    taken: list[int] = []
    waiter = _take_in_thread(lanes, second, 3, 1, taken)
    assert lanes.take(first, 8, 1, None) == 8
    lanes.leave(first)  # the first has admitted all it had: the second goes once a permit is back
    lanes.give(3)
    waiter.join(timeout=30)
    assert taken == [3]


def test_a_chunk_gathering_a_batch_is_woken_once_the_batch_is_free(lanes: _Lanes, monkeypatch) -> None:
    # with a long gather window, the chunk returns only when ``enough`` permits are back, with all of them
    monkeypatch.setattr("workers.chunked.ADMIT_GATHER", 60.0)
    chunk = lanes.join()
    assert lanes.take(chunk, 8, 1, None) == 8
    wakes: list[int] = []
    condition = lanes.waiting[0][1]
    notify = condition.notify
    condition.notify = lambda n=1: (wakes.append(lanes.free), notify(n))  # type: ignore[method-assign]
    taken: list[int] = []
    waiter = _take_in_thread(lanes, chunk, 6, 4, taken)
    lanes.give(1)  # one free: the chunk may admit, and starts gathering
    wait_until(lambda: lanes.awaited == 4, timeout=30)
    for _ in range(3):
        lanes.give(1)
    waiter.join(timeout=30)
    assert taken == [4]
    assert wakes == [1, 4]  # when one was free, then when the batch was: no wake-up for 2 or 3


def test_a_chunk_that_leaves_wakes_the_next_one(lanes: _Lanes) -> None:
    first, second = lanes.join(), lanes.join()
    taken: list[int] = []
    waiter = _take_in_thread(lanes, second, 2, 1, taken)
    lanes.leave(first)
    waiter.join(timeout=30)
    assert taken == [2]
