"""A Redis that fills up: producers refuse new messages with one clear error (HTTP 503 + Retry-After), nothing
half-queued, and the workers still deliver everything already queued (issue 19)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import requests

import producers
from igsend.core.store import forget_connections, memory_share, redis_warnings
from tests.conftest import queue_depth, wait_until, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture
def small_redis(tmp_path: Path, redis_url: str) -> Iterator[redis_lib.Redis]:
    from igsend.local.embedded_redis import start_redis

    server = start_redis(tmp_path / "redis")
    client = redis_lib.Redis.from_url(server.url, decode_responses=True)
    client.config_set("maxmemory-policy", "noeviction")
    os.environ["IGSEND_REDIS_URL"] = server.url
    forget_connections()
    yield client
    os.environ["IGSEND_REDIS_URL"] = redis_url
    forget_connections()
    server.stop()


@pytest.mark.scenario
def test_a_full_redis_refuses_new_messages_and_still_delivers_the_queue(
        small_redis: redis_lib.Redis, sandbox: str, accounts_file: Path, tmp_path: Path) -> None:
    from igsend.local.processes import start_worker
    from producers.api import create_app

    # A worker already running, as in production, slowed down so the queue builds up faster than it drains.
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 300}, timeout=5).raise_for_status()
    worker = start_worker(env=worker_env(os.environ["IGSEND_REDIS_URL"], sandbox, accounts_file),
                          log_path=tmp_path / "worker.log", concurrency=2)
    small_redis.config_set("maxmemory", int(small_redis.info("memory")["used_memory"]) + 4 * 1024 * 1024)
    accepted: list[producers.Job] = []
    with pytest.raises(producers.RedisFull) as refused:
        for batch in range(1000):
            accepted += producers.send_many([{"kind": "text", "recipient": f"full{batch}-{i}",
                                              "text": "filling Redis " + "x" * 200} for i in range(50)]).queued
    assert "nothing was queued" in str(refused.value) and isinstance(refused.value, producers.EnqueueError)
    # Nothing half-queued: every job this call did not return has no record.
    records = {k.split(":")[2] for k in small_redis.scan_iter("igsend:job:*")}
    records |= {k.split(":")[2] for k in small_redis.scan_iter("igsend:done:*")}
    assert records <= {job.id for job in accepted} and queue_depth(small_redis) > 0
    assert any("full" in warning for warning in redis_warnings(small_redis))

    api = create_app(api_keys=["k"]).test_client()
    answer = api.post("/v1/messages", json={"kind": "text", "recipient": "late", "text": "no room"},
                      headers={"Authorization": "Bearer k"})
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "full" in answer.get_json()["message"]

    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
    try:
        wait_until(lambda: all(job.status().value == "delivered" for job in accepted), timeout=180)
    finally:
        worker.stop()
    assert (memory_share(small_redis) or 0) < 0.95  # delivered jobs shrink to their compact records
    assert json.loads(small_redis.get(f"igsend:done:{accepted[0].id}"))["r"].startswith("full")


def test_the_dlq_cap_moves_the_oldest_entries_to_the_archive_file(private_db: redis_lib.Redis,
                                                                   tmp_path: Path) -> None:
    from igsend.core import dlq
    from igsend.core.records import Outcomes

    archive = tmp_path / "dlq-archive.jsonl"
    outcomes = Outcomes(private_db, record_ttl=3600, dlq_max=3, dlq_archive=str(archive))
    for i in range(5):
        private_db.hset(f"igsend:job:dead{i}", mapping={"id": f"dead{i}", "status": "queued", "kind": "text",
                                                       "account": "default", "recipient": f"r{i}",
                                                       "message": json.dumps({"text": f"m{i}"})})
        outcomes.dead(f"dead{i}", f"reason {i}", None, None)
    assert [e["id"] for e in dlq.list_entries(client=private_db)] == ["dead2", "dead3", "dead4"]
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["dead0", "dead1"]  # the oldest, whole, never silently dropped
    assert lines[0]["message"] == {"text": "m0"} and lines[0]["reason"] == "reason 0"
    assert not private_db.exists("igsend:job:dead0") and private_db.exists("igsend:job:dead2")


def test_without_an_archive_file_nothing_is_dropped_and_health_says_so(private_db: redis_lib.Redis,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from igsend.core.records import Outcomes

    monkeypatch.setenv("IGSEND_DLQ_MAX", "2")
    forget_connections()
    outcomes = Outcomes(private_db, record_ttl=3600, dlq_max=2)
    for i in range(3):
        private_db.hset(f"igsend:job:kept{i}", mapping={"id": f"kept{i}", "status": "queued"})
        outcomes.dead(f"kept{i}", "reason", None, None)
    assert private_db.zcard("igsend:dlq:index") == 3
    assert any("over IGSEND_DLQ_MAX" in warning for warning in redis_warnings(private_db))
    monkeypatch.delenv("IGSEND_DLQ_MAX")
    forget_connections()
