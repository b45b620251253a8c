"""igsend.core.chunks without a worker: how the dispatcher cuts what lua/claim_fair.lua took from the lanes into
chunks, what one published ``igsend.send_chunk`` carries (what Flower shows, which jobs the sweeper reads from its
header, never a text or a token), how the published ids leave the moving list, and which jobs a queued envelope
stands for. The queue is the suite's own Redis, in a database no worker consumes (tests/test_chunks.py runs
chunks through real workers)."""

from __future__ import annotations

import ast
import base64
import json
from typing import Any

import pytest
import redis as redis_lib
from celery.signals import before_task_publish

import producers
from igsend.core import chunks
from igsend.core.celery_app import NEW_PRIORITY, QUEUE, get_app, queue_keys
from igsend.core.lanes import lane_key
from tests.conftest import TOKEN


def _step(account: str, send_class: str, *ids: str) -> list[Any]:
    """One step of lua/claim_fair.lua's reply: the lane, how many ids it took, the ids in the order taken."""
    return [lane_key(account, send_class), len(ids), *ids]


def _ids(taken: list[chunks.Chunk]) -> list[tuple[str, str, list[str]]]:
    return [(chunk.account, chunk.send_class, chunk.job_ids) for chunk in taken]


def _queued(r: redis_lib.Redis) -> list[dict]:
    """The envelopes on the igsend queue, oldest first in each of kombu's priority lists."""
    return [json.loads(raw) for key in queue_keys() for raw in reversed(r.lrange(key, 0, -1))]


def _body(envelope: dict) -> list[Any]:
    """The task's (args, kwargs, embed), as the worker decodes them."""
    return json.loads(base64.b64decode(envelope["body"]))


# --- split: lua/claim_fair.lua's reply as chunks -----------------------------------------------------------------


def test_nothing_taken_is_no_chunk() -> None:
    assert chunks.split([], 50) == []


def test_one_step_is_one_chunk_of_its_lane_in_the_order_taken() -> None:
    assert chunks.split(_step("shop", "text", "j3", "j1", "j2"), 50) == [chunks.Chunk("shop", "text",
                                                                                      ["j3", "j1", "j2"])]


@pytest.mark.parametrize(("size", "expected"), [
    (1, [["j1"], ["j2"], ["j3"], ["j4"]]),
    (2, [["j1", "j2"], ["j3", "j4"]]),
    (3, [["j1", "j2", "j3"], ["j4"]]),
    (4, [["j1", "j2", "j3", "j4"]]),
    (50, [["j1", "j2", "j3", "j4"]]),
], ids=["size-1", "size-2", "size-3", "size-4", "size-50"])
def test_a_step_is_cut_into_chunks_of_at_most_size_ids(size: int, expected: list[list[str]]) -> None:
    taken = chunks.split(_step("shop", "text", "j1", "j2", "j3", "j4"), size)
    assert _ids(taken) == [("shop", "text", ids) for ids in expected]


def test_consecutive_steps_of_one_lane_join_one_chunk_and_the_order_of_the_lanes_is_kept() -> None:
    reply = [*_step("shop", "text", "s1", "s2", "s3"), *_step("shop", "text", "s4", "s5"),
             *_step("blog", "media", "b1"), *_step("shop", "text", "s6")]
    assert _ids(chunks.split(reply, 2)) == [
        ("shop", "text", ["s1", "s2"]),
        ("shop", "text", ["s3", "s4"]),  # the second step fills the first one's last chunk
        ("shop", "text", ["s5"]),
        ("blog", "media", ["b1"]),
        ("shop", "text", ["s6"]),  # after another lane's step: a chunk of its own
    ]
    assert _ids(chunks.split(reply, 50)) == [("shop", "text", ["s1", "s2", "s3", "s4", "s5"]),
                                             ("blog", "media", ["b1"]), ("shop", "text", ["s6"])]


def test_steps_of_another_class_or_another_account_are_other_chunks() -> None:
    reply = [*_step("shop", "text", "t1"), *_step("shop", "media", "m1"), *_step("blog", "media", "b1"),
             *_step("blog", "media", "b2")]
    assert _ids(chunks.split(reply, 50)) == [("shop", "text", ["t1"]), ("shop", "media", ["m1"]),
                                             ("blog", "media", ["b1", "b2"])]


def test_the_send_class_is_after_the_lanes_last_bar() -> None:
    reply = [*_step("team|eu", "private_reply", "p1", "p2"), *_step("team|eu", "text", "t1")]
    assert _ids(chunks.split(reply, 50)) == [("team|eu", "private_reply", ["p1", "p2"]), ("team|eu", "text", ["t1"])]


def test_a_reply_not_decoded_to_text_gives_text_ids_and_counts() -> None:
    """Counts as Redis integers or their text, ids as numbers: a chunk's ids are text all the same."""
    reply = [lane_key("shop", "text"), "2", 7, 8, lane_key("blog", "text"), 1, "j9"]
    assert _ids(chunks.split(reply, 50)) == [("shop", "text", ["7", "8"]), ("blog", "text", ["j9"])]


def test_what_claim_fair_lua_takes_from_the_lanes_is_published_as_chunks(private_db: redis_lib.Redis) -> None:
    """The real reply: jobs enqueued for two recipients (one lane: the default account's text), handed out by the
    dispatcher in chunks of 2, each chunk's jobs in the order they were enqueued, none left on the moving list."""
    from workers.scheduler import MOVING_KEY, Scheduler

    jobs = [producers.send_text(f"chunk-unit{i}", f"secret text {i}") for i in range(5)]
    assert Scheduler(private_db, ahead=1000, chunk=2).dispatch() == 5
    queued = _queued(private_db)
    assert [chunks.job_ids_in(envelope) for envelope in queued] == [[jobs[0].id, jobs[1].id],
                                                                    [jobs[2].id, jobs[3].id], [jobs[4].id]]
    assert [ast.literal_eval(envelope["headers"]["argsrepr"])[1:] for envelope in queued] == [["text", 2],
                                                                                             ["text", 2],
                                                                                             ["text", 1]]
    assert private_db.llen(MOVING_KEY) == 0
    raw = json.dumps(queued) + json.dumps([_body(envelope) for envelope in queued])
    assert "secret text" not in raw and TOKEN not in raw


# --- argsrepr and publish: what one igsend.send_chunk carries ----------------------------------------------------


def test_the_arguments_flower_shows_are_account_class_and_count() -> None:
    assert chunks.argsrepr("shop", "text", 50) == "['shop', 'text', 50]"
    assert ast.literal_eval(chunks.argsrepr("team|eu", "private_reply", 3)) == ["team|eu", "private_reply", 3]


@pytest.mark.parametrize("account", ["o'brien", "two\nlines"], ids=["quote", "newline"])
def test_a_published_chunks_arguments_read_back_whatever_the_account_is_called(private_db: redis_lib.Redis,
                                                                             account: str) -> None:
    """Python's repr, one line that reads back as the arguments (Celery's own shortened repr writes a quote
    escaped inside single quotes and a newline as is)."""
    app = get_app()
    with app.producer_or_acquire() as producer:
        chunks.publish(app, producer, chunks.Chunk(account, "text", ["j1", "j2"]))
    [envelope] = _queued(private_db)
    shown = envelope["headers"]["argsrepr"]
    assert shown == repr([account, "text", 2]) and "\n" not in shown
    assert ast.literal_eval(shown) == [account, "text", 2]


def test_a_published_chunk_is_one_send_chunk_task_naming_its_jobs(private_db: redis_lib.Redis) -> None:
    app = get_app()
    chunk = chunks.Chunk("shop", "media", ["job-1", "job-2", "job-3"])
    published: list[tuple[Any, dict[str, Any]]] = []

    def seen(sender: Any = None, **fields: Any) -> None:
        published.append((sender, fields))

    before_task_publish.connect(seen, weak=False)
    try:
        with app.producer_or_acquire() as producer:
            task_id = chunks.publish(app, producer, chunk)
    finally:
        before_task_publish.disconnect(seen)
    # one message, on the bare list of the queue (the normal backlog), and nothing else written: no declaration
    assert private_db.keys("*") == [QUEUE]
    # what a tracing integration listening to Celery's publish signal sees: the chunk task's name; and the publish
    # declares no queue (the workers do; kombu remembers a declaration per process, so the Redis keys above would
    # not show one made again here)
    assert [(sender, fields["headers"]["id"], fields["declare"]) for sender, fields in published] == [
        ("igsend.send_chunk", task_id, [])]
    [envelope] = _queued(private_db)
    headers = envelope["headers"]
    assert task_id.startswith("chunk-") and len(task_id) == len("chunk-") + 36
    assert headers["id"] == headers["root_id"] == envelope["properties"]["correlation_id"] == task_id
    assert headers["task"] == chunks.CHUNK_TASK_NAME == "igsend.send_chunk"
    assert headers["argsrepr"] == "['shop', 'media', 3]"  # what Flower and the logs show
    assert headers["kwargsrepr"] == "{'jobs': '3 job ids'}"
    assert headers[chunks.JOBS_HEADER] == ["job-1", "job-2", "job-3"]  # what the sweeper reads
    assert headers["ignore_result"] is True
    args, kwargs, _ = _body(envelope)
    assert args == ["shop", "media", 3] and kwargs == {"jobs": ["job-1", "job-2", "job-3"]}
    assert envelope["properties"]["priority"] == NEW_PRIORITY
    assert envelope["properties"]["delivery_info"]["routing_key"] == QUEUE
    assert chunks.job_ids_in(envelope) == ["job-1", "job-2", "job-3"]


def test_each_published_chunk_has_a_task_id_of_its_own(private_db: redis_lib.Redis) -> None:
    app = get_app()
    with app.producer_or_acquire() as producer:
        first = chunks.publish(app, producer, chunks.Chunk("shop", "text", ["a"]))
        second = chunks.publish(app, producer, chunks.Chunk("shop", "text", ["b"]))
    assert first != second
    assert [(envelope["headers"]["id"], chunks.job_ids_in(envelope)) for envelope in _queued(private_db)] == [
        (first, ["a"]), (second, ["b"])]


# --- unmove: the published ids leave the moving list -------------------------------------------------------------


@pytest.mark.parametrize(("moving", "published", "left"), [
    (["x1", "a", "b"], ["a", "b"], ["x1"]),  # the tail, as a step pushed it
    (["a", "b", "y1"], ["a", "b"], ["y1"]),  # another leader's step pushed after
    (["x1", "b", "a", "y1"], ["a", "b"], ["x1", "y1"]),  # not in that order
    (["a", "x1", "a"], ["a"], ["a", "x1"]),  # the tail: only the last copy
    (["a", "b"], ["a", "b"], []),
    (["a", "x1", "b", "a"], ["a", "b"], ["x1", "a"]),  # one by one, each once from the head
], ids=["tail", "not-tail", "other-order", "tail-duplicate", "everything", "one-by-one"])
def test_the_published_ids_leave_the_moving_list(private_db: redis_lib.Redis, moving: list[str],
                                                  published: list[str], left: list[str]) -> None:
    private_db.rpush("moving", *moving)
    chunks.unmove(private_db, "moving", published)
    assert private_db.lrange("moving", 0, -1) == left


def test_unmoving_no_id_leaves_the_moving_list(private_db: redis_lib.Redis) -> None:
    private_db.rpush("moving", "a", "b")
    chunks.unmove(private_db, "moving", [])
    assert private_db.lrange("moving", 0, -1) == ["a", "b"]


# --- job_ids_in: which jobs a queued or unacknowledged envelope stands for ---------------------------------------


@pytest.mark.parametrize(("envelope", "ids"), [
    ({"headers": {"task": "igsend.send_chunk", "id": "chunk-1", "igsend_jobs": ["j1", "j2"]}}, ["j1", "j2"]),
    ({"headers": {"task": "igsend.send_chunk", "id": "chunk-1", "igsend_jobs": [3, 4]}}, ["3", "4"]),
    ({"headers": {"task": "igsend.send_chunk", "id": "chunk-1", "igsend_jobs": []}}, []),
    ({"headers": {"task": "igsend.send_message", "id": "job-7"}}, ["job-7"]),
    ({"headers": {"task": "igsend.send_message", "id": 7}}, ["7"]),
    ({"headers": {"id": "job-7", "igsend_jobs": "j1"}}, ["job-7"]),  # not a list: not a chunk's
    ({"headers": {"id": "job-7", "igsend_jobs": None}}, ["job-7"]),
    ({"headers": {"task": "igsend.send_message", "id": ""}}, []),
    ({"headers": {"task": "igsend.send_message", "id": None}}, []),
    ({"headers": {"task": "igsend.send_message"}}, []),
    ({"headers": None}, []),
    ({"body": "..."}, []),
    ("not an envelope", []),
    (None, []),
], ids=["chunk", "chunk-numbers", "chunk-empty", "message", "message-number", "header-not-a-list",
        "header-none", "empty-id", "none-id", "no-id", "no-headers", "headers-missing", "text", "none"])
def test_the_jobs_an_envelope_stands_for(envelope: Any, ids: list[str]) -> None:
    assert chunks.job_ids_in(envelope) == ids
