"""One Celery task per chunk of one account's jobs (igsend.core.chunks, workers/chunked.py): every job delivered once,
nothing lost or doubled when the worker holding a chunk is SIGKILLed, the chunk's name and arguments saying which
account and how many. Real workers, real Redis, the sandbox; counts and order, never time."""

from __future__ import annotations

import os

import pytest
import requests

import producers
from igsend.core import chunks
from igsend.core.celery_app import get_app
from igsend.core.store import STATS_KEY, get_redis
from tests.conftest import received, reset_client_caches, wait_until, worker_env


def _task_totals() -> dict[str, int]:
    """Tasks run so far by the workers that answer, by name (Celery's worker stats)."""
    totals: dict[str, int] = {}
    for stats in (get_app().control.inspect(timeout=2).stats() or {}).values():
        for name, count in (stats.get("total") or {}).items():
            totals[name] = totals.get(name, 0) + int(count)
    return totals


@pytest.mark.usefixtures("worker", "clean")
def test_a_chunk_delivers_every_job_once_in_few_tasks(sandbox: str, worker_log) -> None:
    before = _task_totals()
    batch = producers.send_many([{"kind": "text", "recipient": f"chunk{i}", "text": f"chunked {i}"}
                                 for i in range(120)])
    assert len(batch.queued) == 120
    wait_until(lambda: all(job.status().value == "delivered" for job in batch.queued), timeout=120)
    texts = [m["body"]["message"]["text"] for m in received(sandbox)]
    assert sorted(texts) == sorted(f"chunked {i}" for i in range(120))  # each once
    after = _task_totals()
    chunk_tasks = after.get(chunks.CHUNK_TASK_NAME, 0) - before.get(chunks.CHUNK_TASK_NAME, 0)
    single_tasks = after.get("igsend.send_message", 0) - before.get("igsend.send_message", 0)
    assert single_tasks == 0
    assert 3 <= chunk_tasks <= 60, chunk_tasks  # at most 50 a chunk; far fewer tasks than messages
    record = batch.queued[0].info()
    assert record["status"] == "delivered" and record["attempts"] == 1
    # the chunk's thread writes the POST threads' lines: still one per POST, with its outcome
    lines = worker_log.read_text().splitlines()
    for job in batch.queued:
        mine = [line for line in lines if f"send job={job.id} " in line]
        assert len(mine) == 1 and "attempt=1 outcome=delivered" in mine[0], mine


def test_a_chunks_name_and_arguments_say_account_and_count_never_ids_text_or_token() -> None:
    app = get_app()
    chunk = chunks.Chunk("shop", "text", ["job-1", "job-2", "job-3"])
    sent: list = []

    class Producer:
        def publish(self, body, **options):  # what kombu would put on the queue
            sent.append((body, options))

    app.amqp.send_task_message = lambda producer, name, message, **_: sent.append((name, message))
    try:
        chunks.publish(app, Producer(), chunk)
    finally:
        del app.amqp.send_task_message
    name, message = sent[0]
    assert name == "igsend.send_chunk"
    assert message.headers["argsrepr"] == "['shop', 'text', 3]"  # what Flower and the logs show
    assert message.headers["kwargsrepr"] == "{'jobs': '3 job ids'}"
    assert message.headers[chunks.JOBS_HEADER] == ["job-1", "job-2", "job-3"]  # for the lost-message sweeper
    assert chunks.job_ids_in({"headers": message.headers}) == ["job-1", "job-2", "job-3"]


def test_claimed_steps_split_into_chunks_of_one_lane() -> None:
    reply = ["igsend:lane:a|text", 3, "1", "2", "3", "igsend:lane:b|media", 1, "4", "igsend:lane:a|text", 2, "5", "6"]
    assert chunks.split(reply, 2) == [chunks.Chunk("a", "text", ["1", "2"]), chunks.Chunk("a", "text", ["3"]),
                                      chunks.Chunk("b", "media", ["4"]), chunks.Chunk("a", "text", ["5", "6"])]
    assert chunks.split(["igsend:lane:a|text", 1, "1", "igsend:lane:a|text", 1, "2"], 50) == [
        chunks.Chunk("a", "text", ["1", "2"])]


@pytest.mark.scenario
@pytest.mark.usefixtures("clean")
def test_a_worker_sigkilled_mid_chunk_loses_and_doubles_nothing(redis_url: str, sandbox: str, accounts_file,
                                                                 tmp_path) -> None:
    """20 texts, one chunk; the worker (4 POST threads) is killed while 4 of them are being POSTed: those 4 are
    reconciled (found at Meta), the 16 it had not admitted are delivered by the next worker; each text once."""
    from igsend.local.processes import start_worker

    isolated = redis_url.rsplit("/", 1)[0] + "/4"  # a database the session's worker does not consume
    os.environ["IGSEND_REDIS_URL"] = isolated
    reset_client_caches()
    try:
        get_redis().flushdb()
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 2000}, timeout=5).raise_for_status()
        env = worker_env(isolated, sandbox, accounts_file)
        victim = start_worker(env=env, log_path=tmp_path / "victim.log", concurrency=4)
        jobs = producers.send_many([{"kind": "text", "recipient": f"midchunk{i}", "text": f"mid-chunk {i}"}
                                    for i in range(20)]).queued
        wait_until(lambda: sum(j.status().value == "sending" for j in jobs) == 4, timeout=30)
        assert sum(j.status().value == "queued" for j in jobs) == 16  # in the chunk, not admitted yet
        victim.kill()
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
        rescuer = start_worker(env=env, log_path=tmp_path / "rescuer.log", concurrency=4)
        try:
            wait_until(lambda: all(j.status().final for j in jobs), timeout=180)  # a hang guard, not a speed bound
        finally:
            rescuer.stop()
        assert sorted(j.status().value for j in jobs) == ["delivered"] * 20
        texts = [m["body"]["message"]["text"] for m in received(sandbox)]
        assert sorted(texts) == sorted(f"mid-chunk {i}" for i in range(20))  # nothing twice, nothing lost
        assert int(get_redis().hget(STATS_KEY, "reconciled_total") or 0) == 4
    finally:
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5)
        os.environ["IGSEND_REDIS_URL"] = redis_url
        reset_client_caches()
