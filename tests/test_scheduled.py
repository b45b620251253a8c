"""Scheduled sends (``send_at``) and cancel: held in Redis until due, POSTed within about a second of their time
and never before, ahead of a backlog, through a Redis restart; a cancelled message is never POSTed."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from producers import CancelRefused, InvalidMessage, JobStatus, get_job, send, send_many, send_text
from schemas import load_message
from tests.conftest import received, reset_client_caches, worker_env
from tests.test_cli import igsend


def refused(document: dict) -> str:
    with pytest.raises(InvalidMessage) as caught:
        load_message(document)
    return str(caught.value)


def text(**extra: object) -> dict:
    return {"kind": "text", "recipient": "sched", "text": "see you at nine", **extra}


# --- the rules of send_at ------------------------------------------------------------------------------------

def test_send_at_takes_iso_8601_with_a_zone_or_unix_seconds() -> None:
    assert load_message(text(send_at="2026-12-24T09:00:00+01:00"))["send_at"] == \
        datetime(2026, 12, 24, 8, tzinfo=UTC).timestamp()
    assert load_message(text(send_at="2026-12-24T08:00:00Z"))["send_at"] == \
        datetime(2026, 12, 24, 8, tzinfo=UTC).timestamp()
    assert load_message(text(send_at=1798000000))["send_at"] == 1798000000.0


@pytest.mark.parametrize("value,message", [
    ("2026-12-24T09:00:00", "send_at: must include a time zone, e.g. 2026-12-24T09:00:00Z or "
                            "2026-12-24T09:00:00+01:00 (got '2026-12-24T09:00:00')"),
    ("at nine", "send_at: must be ISO 8601 with a time zone, e.g. 2026-12-01T09:00:00Z (got 'at nine')"),
    (True, "send_at: must be ISO 8601 with a time zone, or Unix seconds (got bool)"),
    (-1, "send_at: must be a positive number of Unix seconds (got -1)"),
])
def test_send_at_refused(value: object, message: str) -> None:
    assert refused(text(send_at=value)) == message


def test_more_than_a_year_ahead_is_refused() -> None:
    later = datetime.now(UTC) + timedelta(days=367)
    assert refused(text(send_at=later.isoformat())).startswith("send_at: must be at most a year ahead (got ")
    assert load_message(text(send_at=(datetime.now(UTC) + timedelta(days=360)).isoformat()))


def test_python_refuses_a_naive_datetime() -> None:
    with pytest.raises(InvalidMessage) as caught:
        send_text("sched", "hi", send_at=datetime(2026, 12, 24, 9))
    assert str(caught.value).startswith("send_at: must be an aware datetime (with a tzinfo")


# --- end to end ----------------------------------------------------------------------------------------------

def _posted_at(sandbox: str, recipient: str) -> list[float]:
    return [m["received_at"] for m in received(sandbox) if m["body"]["recipient"].get("id") == recipient]


@pytest.mark.usefixtures("worker", "clean")
def test_a_scheduled_message_goes_on_time_and_not_before(sandbox: str, r) -> None:
    due = time.time() + 2.5
    job = send_text("sched-on-time", "your table is ready", send_at=datetime.fromtimestamp(due, UTC))
    assert job.status() is JobStatus.SCHEDULED and job.info()["next_attempt_at"] == pytest.approx(due)
    assert r.zscore("igsend:delayed", job.id) == pytest.approx(due)
    time.sleep(1.5)
    assert _posted_at(sandbox, "sched-on-time") == []  # not before its time
    assert job.result(timeout=10)["message_id"]
    [posted] = _posted_at(sandbox, "sched-on-time")
    assert due <= posted < due + 1.5, f"posted {posted - due:+.2f} s from its time"


@pytest.mark.usefixtures("worker", "clean")
def test_a_time_in_the_past_sends_now(sandbox: str) -> None:
    job = send(text(recipient="sched-past", send_at="2020-01-01T00:00:00Z"))
    assert job.result(timeout=10)["message_id"]


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_due_messages_do_not_wait_behind_a_backlog(sandbox: str) -> None:
    """A backlog of another account's messages: the due one still goes within about a second of its time."""
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 40}, timeout=5).raise_for_status()
    try:
        backlog = send_many([text(recipient=f"backlog-{i}") for i in range(1500)])  # ~15 s at 100/s
        due = time.time() + 2
        job = send(text(recipient="sched-ahead", account="shop", send_at=due))
        assert job.result(timeout=15)["message_id"]
        [posted] = _posted_at(sandbox, "sched-ahead")
        assert posted < due + 1.5, f"posted {posted - due:+.2f} s from its time"
        left = sum(1 for j in backlog.queued if j.status() is not JobStatus.DELIVERED)
        assert left > 200, "the backlog drained first: this test no longer shows anything"
        for queued in backlog.queued:
            queued.wait(timeout=60)
    finally:
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()


@pytest.mark.usefixtures("worker", "clean")
def test_a_cancelled_message_is_never_posted(sandbox: str) -> None:
    job = send_text("sched-cancel", "never mind", send_at=time.time() + 1.5)
    job.cancel()
    assert job.status() is JobStatus.CANCELLED
    time.sleep(2.5)
    assert _posted_at(sandbox, "sched-cancel") == []
    with pytest.raises(CancelRefused) as again:
        job.cancel()
    assert str(again.value) == f"job {job.id} cannot be cancelled: it is already cancelled"


@pytest.mark.usefixtures("worker", "clean")
def test_a_sent_message_cannot_be_taken_back(sandbox: str) -> None:
    job = send_text("sched-sent", "already gone")
    job.result(timeout=10)
    with pytest.raises(CancelRefused) as caught:
        job.cancel()
    assert str(caught.value) == f"job {job.id} cannot be cancelled: it is already delivered"


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_cancel_from_the_cli(sandbox: str) -> None:
    queued = igsend("send", "text", "sched-cli", "later", "--at", "2099-01-01T00:00:00Z")
    assert queued.returncode == 2 and "send_at: must be at most a year ahead" in queued.stderr
    at = datetime.fromtimestamp(time.time() + 60, UTC).isoformat()
    queued = igsend("send", "text", "sched-cli", "later", "--at", at)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert json.loads(igsend("status", job_id).stdout)["status"] == "scheduled"
    cancelled = igsend("cancel", job_id)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    again = igsend("cancel", job_id)
    assert again.returncode == 1 and again.stderr.strip() == \
        f"error: job {job_id} cannot be cancelled: it is already cancelled"
    assert igsend("cancel", "no-such-job").returncode == 1


def test_scheduled_messages_survive_a_redis_restart(tmp_path: Path, sandbox: str, accounts_file: Path) -> None:
    """Scheduled with no worker running, Redis restarted (AOF), then a worker: it goes at its time, once."""
    from igsend.local.embedded_redis import start_redis
    from igsend.local.processes import start_worker

    server = start_redis(tmp_path / "redis")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    previous = os.environ.get("IGSEND_REDIS_URL")
    os.environ["IGSEND_REDIS_URL"] = server.url
    reset_client_caches()
    worker = None
    try:
        due = time.time() + 6
        job = send_text("sched-restart", "still on", send_at=due)
        server.stop()
        server = start_redis(tmp_path / "redis", port=port)
        reset_client_caches()
        assert get_job(job.id).status() is JobStatus.SCHEDULED
        worker = start_worker(env=worker_env(server.url, sandbox, accounts_file), concurrency=4)
        assert job.result(timeout=20)["message_id"]
        posted = _posted_at(sandbox, "sched-restart")
        assert len(posted) == 1 and due <= posted[0] < due + 1.5
    finally:
        if worker:
            worker.stop()
        server.stop()
        if previous is not None:
            os.environ["IGSEND_REDIS_URL"] = previous
        reset_client_caches()


def test_the_http_api_schedules_and_cancels(private_db) -> None:  # db 1: no worker takes the message away
    from tests.test_api import AUTH, app

    client = app.test_client()
    at = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    created = client.post("/v1/messages", json=text(send_at=at), headers=AUTH)
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["id"]
    assert client.get(f"/v1/messages/{job_id}", headers=AUTH).get_json()["status"] == "scheduled"
    cancelled = client.delete(f"/v1/messages/{job_id}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert private_db.zscore("igsend:delayed", job_id) is None
    again = client.delete(f"/v1/messages/{job_id}", headers=AUTH)
    assert again.status_code == 409
    assert again.get_json()["message"] == f"job {job_id} cannot be cancelled: it is already cancelled"
    assert client.delete("/v1/messages/no-such-job", headers=AUTH).status_code == 404
    naive = client.post("/v1/messages", json=text(send_at="2026-12-24T09:00:00"), headers=AUTH)
    assert naive.status_code == 422 and "send_at" in naive.get_json()["errors"]["json"]


def test_a_cancelled_message_already_in_the_queue_is_never_posted(tmp_path: Path, redis_url: str, sandbox: str,
                                                                  accounts_file: Path) -> None:
    """Cancelled while its Celery message waits in the broker: the worker that takes it sends nothing."""
    import redis as redis_lib

    from igsend.local.processes import start_worker
    from tests.conftest import queue_depth, wait_until

    url = redis_url.rsplit("/", 1)[0] + "/4"  # no worker consumes this database until the test starts one
    previous = os.environ["IGSEND_REDIS_URL"]
    os.environ["IGSEND_REDIS_URL"] = url
    reset_client_caches()
    client = redis_lib.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    worker = None
    try:
        job = send_text("cancel-queued", "never sent")
        assert queue_depth(client) == 1
        job.cancel()
        worker = start_worker(env=worker_env(url, sandbox, accounts_file), concurrency=4,
                              log_path=tmp_path / "worker.log")
        wait_until(lambda: queue_depth(client) == 0, timeout=20)
        time.sleep(1.0)
        assert job.status() is JobStatus.CANCELLED
        assert _posted_at(sandbox, "cancel-queued") == []
    finally:
        if worker:
            worker.stop()
        client.flushdb()
        os.environ["IGSEND_REDIS_URL"] = previous
        reset_client_caches()


@pytest.mark.usefixtures("worker", "clean")
def test_many_due_at_once_go_at_the_budget_in_order_of_their_time(sandbox: str) -> None:
    """300 messages due within the same second: they go at the account's budget (100/s, Instagram Login), the
    earlier-due ones first."""
    due = time.time() + 2
    documents = [text(recipient=f"due-{i:03d}", send_at=due + i * 0.002) for i in range(300)]
    batch = send_many(documents)
    finish = time.monotonic() + 30
    while time.monotonic() < finish and len([m for m in received(sandbox)
                                             if m["body"]["recipient"]["id"].startswith("due-")]) < 300:
        time.sleep(0.2)
    posted = sorted((m["received_at"], m["body"]["recipient"]["id"]) for m in received(sandbox)
                    if m["body"]["recipient"]["id"].startswith("due-"))
    assert len(posted) == 300
    assert posted[0][0] >= due
    busiest = max(sum(1 for at, _ in posted if start <= at < start + 1) for start, _ in posted)
    assert busiest <= 110, f"{busiest} in one second: over the account's budget"
    first_sent = {name for _, name in posted[:100]}
    assert len(first_sent & {f"due-{i:03d}" for i in range(150)}) >= 90  # the earlier-due ones went first
    assert all(job.status() is JobStatus.DELIVERED for job in batch.queued)
