"""Meta's real answers against the real worker and the sandbox: a repeated setup error holds the account (the
circuit breaker) and healing sends everything held once, a throttle pause is lifted by healing, replays never
double a delivery, raw messages always end, a revoke cancels, a dead letter logs one line.

A person's refusal, code 4's app-wide pause, the breaker's reset and token blanking are decisions of the task
alone: test_delivery_inprocess proves them without a worker."""

from __future__ import annotations

import json
import pickle
import time
import uuid

import pytest
import requests

import producers
from igsend.core import dlq
from igsend.core.account_state import mark_healthy, state
from igsend.core.celery_app import TASK_NAME, get_app
from igsend.core.errors import ReplayRefused
from igsend.core.store import get_redis, job_key
from tests.conftest import received, wait_until

pytestmark = pytest.mark.usefixtures("worker", "clean")


def fault(sandbox: str, recipient: str, *faults: dict) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(faults)},
                  timeout=5).raise_for_status()



SETUP_ERROR = {"code": 100, "message": "Unsupported request - method type: post", "sticky": True}


def test_the_same_setup_error_for_five_recipients_holds_the_account_and_heal_sends_them(sandbox: str) -> None:
    for i in range(5):
        fault(sandbox, f"setup{i}", SETUP_ERROR)
    jobs = []
    for i in range(5):  # one after another, as a backlog would meet them
        jobs.append(producers.send_text(f"setup{i}", f"message {i}"))
        wait_until(lambda job=jobs[-1]: job.info()["attempts"] >= 1 and job.status().value != "sending")
    account = wait_until(lambda: (s := state("default"))["health"] == "broken" and s)
    assert "circuit breaker" in account["reason"] and "Unsupported request" in account["reason"]
    assert account["held"] == 5  # the four dead-lettered before the trip came back out of the DLQ
    assert dlq.list_entries() == []
    assert all(job.status().value == "queued" for job in jobs)
    later = producers.send_text("bystander", "waits with the rest")
    wait_until(lambda: state("default")["held"] == 6)

    requests.delete(f"{sandbox}/_sandbox/faults", timeout=5)  # the operator fixes the setup ...
    assert mark_healthy("default") == 6  # ... and heals: everything held is sent, once
    for job in [*jobs, later]:
        job.result(timeout=30)
    assert sorted(m["body"]["recipient"]["id"] for m in received(sandbox)) == sorted(
        [f"setup{i}" for i in range(5)] + ["bystander"])




def test_heal_releases_jobs_waiting_out_a_throttle_pause(sandbox: str) -> None:
    fault(sandbox, "throttled", {"code": 613, "subcode": 2534040, "retry_after": 10**9})  # capped at an hour
    first = producers.send_text("throttled", "pauses the account")
    wait_until(lambda: first.status().value == "retrying")
    second = producers.send_text("waiting", "deferred by the pause")
    wait_until(lambda: second.status().value == "retrying")
    paused_until = state("default")["paused_until"]
    assert paused_until is not None and paused_until - time.time() <= 3600 + 5
    assert mark_healthy("default") == 2
    first.result(timeout=30)
    second.result(timeout=30)



def test_replay_refuses_a_job_that_is_not_dead_now(sandbox: str) -> None:
    fault(sandbox, "twice", {"code": 100, "subcode": 2018001})
    job = producers.send_text("twice", "once only")
    with pytest.raises(producers.MessageDead):
        job.result(timeout=30)
    redis = get_redis()
    redis.hset(job_key(job.id), "result", json.dumps({"recipient_id": "twice"}))  # the record says delivered
    with pytest.raises(ReplayRefused, match="delivered"):
        dlq.replay(job.id)
    redis.hdel(job_key(job.id), "result")
    redis.hset(job_key(job.id), "status", "queued")  # e.g. a replay already under way
    with pytest.raises(ReplayRefused, match="queued"):
        dlq.replay(job.id)
    redis.hset(job_key(job.id), "status", "dead")
    assert dlq.replay(job.id) is True
    job.result(timeout=30)
    assert len(received(sandbox, recipient="twice")) == 1


def _publish_raw(body: bytes, content_type: str, job_id: str) -> None:
    """A message as another Celery client would write it (protocol 2 headers)."""
    app = get_app()
    with app.producer_or_acquire() as producer:
        producer.publish(body, routing_key="igsend", exchange="", content_type=content_type,
                         content_encoding="utf-8" if content_type == "application/json" else "binary",
                         headers={"lang": "py", "task": TASK_NAME, "id": job_id, "root_id": job_id,
                                  "parent_id": None, "group": None, "argsrepr": "", "kwargsrepr": ""},
                         properties={"priority": 6}, declare=[])


def test_celery_node_default_call_with_null_kwargs_is_delivered(sandbox: str) -> None:
    job_id = str(uuid.uuid4())
    document = {"kind": "text", "recipient": "node1", "text": "from celery-node"}
    _publish_raw(json.dumps([[document], None, {"callbacks": None, "errbacks": None, "chain": None,
                                                "chord": None}]).encode(), "application/json", job_id)
    job = producers.Job(job_id)
    wait_until(lambda: job.status().value != "not_found")  # a raw publish has no record until a worker takes it
    assert job.result(timeout=30)["recipient_id"] == "node1"


@pytest.mark.parametrize("shape", ["two-positional", "pickle", "bad-json"])
def test_raw_messages_that_never_reach_the_task_still_end_dead_lettered(sandbox: str, shape: str) -> None:
    job_id = str(uuid.uuid4())
    document = {"kind": "text", "recipient": "raw1", "text": "x"}
    if shape == "two-positional":
        _publish_raw(json.dumps([[document, "extra"], {}, {}]).encode(), "application/json", job_id)
    elif shape == "pickle":
        _publish_raw(pickle.dumps(([document], {}, {})), "application/x-python-serialize", job_id)
    else:
        _publish_raw(b"[[{\"kind\": \"text\",", "application/json", job_id)
    job = producers.Job(job_id)
    wait_until(lambda: job.status().value == "dead", timeout=30)
    entry = dlq.show(job_id)
    assert entry is not None and entry["reason"]
    assert received(sandbox, recipient="raw1") == []


def test_a_revoked_task_ends_cancelled_and_is_never_sent(sandbox: str) -> None:
    app = get_app()
    job_id = str(uuid.uuid4())
    app.control.revoke(job_id)
    # The broadcast must reach the worker before the task does: wait until the worker lists the id as revoked.
    wait_until(lambda: any(job_id in ids for ids in (app.control.inspect(timeout=0.5).revoked() or {}).values()))
    app.send_task(TASK_NAME, args=[{"kind": "text", "recipient": "revoked1", "text": "never"}], task_id=job_id,
                  queue="igsend")
    info = wait_until(lambda: (i := producers.Job(job_id).info())["status"] == "cancelled" and i, timeout=30)
    assert "revoked" in info["reason"]
    time.sleep(0.3)  # proves a negative: a POST made despite the revoke would have reached the sandbox by now
    assert received(sandbox, recipient="revoked1") == []


def test_a_dead_letter_logs_one_line_without_a_traceback(sandbox: str, worker_log) -> None:
    fault(sandbox, "onelinedead", {"code": 100, "subcode": 2018001})
    job = producers.send_text("onelinedead", "x")
    with pytest.raises(producers.MessageDead):
        job.result(timeout=30)

    def ours() -> bool:
        return any(job.id in line and "dead-lettered" in line
                   for line in worker_log.read_text(errors="replace").splitlines())

    wait_until(ours, timeout=10)
    time.sleep(0.2)  # proves a negative: a traceback logged after our line would be written by now
    lines = worker_log.read_text(errors="replace").splitlines()
    mine = [i for i, line in enumerate(lines) if job.id in line and "dead-lettered" in line]
    assert len(mine) == 1, mine
    following = lines[mine[0] + 1] if mine[0] + 1 < len(lines) else ""
    assert not following.startswith("Traceback")


@pytest.mark.usefixtures("private_db")
def test_every_publish_path_hides_the_text_from_flower(private_db) -> None:
    from igsend.core.celery_app import DUE_PRIORITY, publish, queue_keys

    app = get_app()
    with app.producer_or_acquire() as producer:  # the scheduler's and the replay's path: no argsrepr given
        publish(app, producer, str(uuid.uuid4()), {"kind": "text", "recipient": "r", "text": "SECRET-ISH TEXT",
                                                    "account": "default"}, priority=DUE_PRIORITY)
    raw = [m for key in queue_keys() for m in private_db.lrange(key, 0, -1)]
    assert len(raw) == 1
    headers = json.loads(raw[0])["headers"]
    assert "SECRET-ISH TEXT" not in headers["argsrepr"] and "'recipient': 'r'" in headers["argsrepr"]
