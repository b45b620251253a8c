"""Nothing lost, nothing sent twice: idempotency keys, redeliveries, lost answers, killed workers, raw tasks."""

from __future__ import annotations

import threading
import time

import pytest
import requests

import producers
from igsend.core import dlq
from igsend.core.celery_app import QUEUE, TASK_NAME, get_app
from tests.conftest import received, wait_until, worker_env

pytestmark = pytest.mark.usefixtures("worker", "clean")


def test_same_idempotency_key_same_job_nothing_new_enqueued(sandbox: str, r) -> None:
    first = producers.send_text("idem1", "once", idempotency_key="order-1001")
    again = producers.send_text("idem1", "once", idempotency_key="order-1001")
    assert again == first
    other_account = producers.send_text("idem1", "once", idempotency_key="order-1001", account="shop")
    assert other_account != first
    first.result(timeout=30)
    other_account.result(timeout=30)
    assert len(received(sandbox)) == 2


def test_concurrent_calls_with_one_key_create_exactly_one_job(sandbox: str) -> None:
    ids, errors = [], []

    def call() -> None:
        try:
            ids.append(producers.send_text("idem2", "racing", idempotency_key="race-7").id)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(ids) == 20 and len(set(ids)) == 1
    producers.get_job(ids[0]).result(timeout=30)
    time.sleep(0.3)  # proves a negative: a second job for the key would have been sent by now
    assert len(received(sandbox)) == 1


def test_cli_idempotency_key(sandbox: str) -> None:
    from click.testing import CliRunner

    from igsend.cli import main

    runner = CliRunner()
    first = runner.invoke(main, ["send", "sticker", "idem3", "--idempotency-key", "k-1"])
    second = runner.invoke(main, ["send", "sticker", "idem3", "--idempotency-key", "k-1"])
    assert first.exit_code == 0 and first.output == second.output



def test_an_answer_lost_after_sending_is_reconciled_and_not_resent(sandbox: str) -> None:
    """The default IGSEND_UNKNOWN_OUTCOME=reconcile (tests/test_reconcile.py has the rest; the dead-letter policy is
    in tests/test_delivery_inprocess.py)."""
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "lost1", "faults": [{"hang": True}]},
                  timeout=5).raise_for_status()
    job = producers.send_text("lost1", "did it arrive?")
    [sent] = wait_until(lambda: received(sandbox))
    assert job.result(timeout=30)["message_id"] == sent["message_id"]  # Meta's id, found in the conversation
    time.sleep(0.3)  # proves a negative: a resend would have reached the sandbox by now (retry base 0.2 s)
    assert len(received(sandbox, recipient="lost1")) == 1  # Meta (the sandbox) got it once; igsend did not resend
    info = job.info()
    assert info["status"] == "delivered" and info["attempts"] == 1
    assert dlq.show(job.id) is None


def test_raw_send_task_is_validated_and_delivered(sandbox: str) -> None:
    task = get_app().send_task(TASK_NAME, args=[{"kind": "text", "recipient": "raw1", "text": "from Go"}],
                               queue=QUEUE)
    job = producers.Job(task.id)
    assert wait_until(lambda: job.status().value == "delivered")
    assert received(sandbox)[0]["body"]["message"]["text"] == "from Go"


@pytest.mark.parametrize("args,kwargs,reason", [
    ([{"kind": "text", "recipient": "raw2"}], {}, "invalid message: text: is required"),
    (["just a string"], {}, "invalid message: _schema: a message must be a JSON object (got str)"),
    ([{"kind": "fax", "recipient": "raw2"}], {}, "invalid message: kind: must be one of"),
    ([{"kind": "text", "recipient": "raw2", "text": "hi", "account": "nobody"}], {},
     "account 'nobody' is not configured"),
    ([], {"message": {"kind": "text", "recipient": "raw2", "text": "hi"}, "token": "x"}, "invalid message: token"),
])
def test_malformed_raw_tasks_are_dead_lettered_once(sandbox: str, args, kwargs, reason: str) -> None:
    task = get_app().send_task(TASK_NAME, args=args, kwargs=kwargs, queue=QUEUE)
    job = producers.Job(task.id)
    wait_until(lambda: job.status().value == "dead")
    info = job.info()
    assert info["reason"].startswith(reason), info["reason"]
    assert dlq.show(task.id)["reason"] == info["reason"]
    assert received(sandbox) == []


@pytest.mark.scenario
def test_a_sigkilled_worker_loses_nothing(redis_url: str, sandbox: str, accounts_file, tmp_path) -> None:
    """A worker killed mid-POST: its in-flight jobs are reconciled (found at Meta, or sent again once if they
    never got there), its queued ones deliver; nothing twice."""
    from igsend.local.processes import start_worker
    from tests.conftest import reset_client_caches

    isolated = redis_url.rsplit("/", 1)[0] + "/3"  # a database the session's worker does not consume
    import os

    os.environ["IGSEND_REDIS_URL"] = isolated
    reset_client_caches()
    try:
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 2000}, timeout=5).raise_for_status()
        env = worker_env(isolated, sandbox, accounts_file)
        victim = start_worker(env=env, log_path=tmp_path / "victim.log", concurrency=2)
        jobs = [producers.send_text(f"kill{i}", f"survive {i}") for i in range(6)]
        wait_until(lambda: sum(j.status().value == "sending" for j in jobs) == 2, timeout=20)
        victim.kill()
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
        rescuer = start_worker(env=env, log_path=tmp_path / "rescuer.log", concurrency=4)
        try:
            wait_until(lambda: all(j.status().final for j in jobs), timeout=180)  # a hang guard, not a speed bound
        finally:
            rescuer.stop()
        statuses = sorted(j.status().value for j in jobs)
        assert statuses == ["delivered"] * 6
        texts = [m["body"]["message"]["text"] for m in received(sandbox)]
        assert len(texts) == len(set(texts)) == 6  # nothing sent twice, nothing lost
        from igsend.core.store import STATS_KEY, get_redis

        assert int(get_redis().hget(STATS_KEY, "reconciled_total") or 0) == 2
    finally:
        os.environ["IGSEND_REDIS_URL"] = redis_url
        reset_client_caches()
