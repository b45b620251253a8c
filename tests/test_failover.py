"""Redis Sentinel: igsend follows a failover, and with IGSEND_REDIS_REPLICA_ACKS nothing accepted is lost.

Real processes: a primary, a replica and three sentinels (igsend.local.sentinel, 1 s down-after, 3 s failover
timeout), the session's sandbox, and an ``igsend worker`` given only the ``sentinel://`` URL.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from igsend.local.sentinel import SentinelCluster, start_cluster
from tests.conftest import reset_client_caches, worker_env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    started = start_cluster(tmp_path_factory.mktemp("sentinel"))
    yield started
    started.stop()


@pytest.fixture
def via_sentinel(cluster: SentinelCluster) -> Iterator[str]:
    """This process's producers talk to the cluster through the sentinels, with replica acks on."""
    saved = {name: os.environ.get(name) for name in ("IGSEND_REDIS_URL", "IGSEND_REDIS_REPLICA_ACKS")}
    os.environ.update({"IGSEND_REDIS_URL": cluster.url, "IGSEND_REDIS_REPLICA_ACKS": "1"})
    reset_client_caches()
    yield cluster.url
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_client_caches()


def _wait_final(job_ids: list[str], timeout: float) -> dict[str, str]:
    from igsend.core import records
    from igsend.core.store import get_redis

    deadline = time.monotonic() + timeout
    while True:
        found = dict(zip(job_ids, (s.value for s in records.statuses(get_redis(), job_ids)), strict=True))
        if all(s in ("delivered", "dead", "unknown") for s in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.mark.skipif(not os.environ.get("IGSEND_FAILOVER_PROBE"), reason=(
    "a probe of a known gap, run with IGSEND_FAILOVER_PROBE=1: SENTINEL FAILOVER on Redis 7.0 promotes one replica "
    "~1 s before it reconfigures the other; in that window the old primary still has a replica, so its writes pass "
    "WAIT 1 and are then dropped by the resync (README, Sentinel)"))
def test_sends_through_a_sentinel_failover_exactly_once(cluster: SentinelCluster, via_sentinel: str, sandbox: str,
                                                       accounts_file: Path, tmp_path: Path) -> None:
    from igsend.local.processes import start_worker
    from producers import EnqueueError, send_many

    worker = start_worker(env=worker_env(via_sentinel, sandbox, accounts_file, IGSEND_REDIS_REPLICA_ACKS="1"),
                          log_path=tmp_path / "worker.log", concurrency=16)
    run = uuid.uuid4().hex[:8]
    texts = [f"failover {run} {i}" for i in range(150)]
    accepted: list[tuple[str, str]] = []
    refused = 0

    def produce() -> None:
        nonlocal refused
        for start in range(0, len(texts), 10):
            batch = texts[start:start + 10]
            while True:
                try:
                    result = send_many([{"kind": "text", "recipient": "6543210987654321", "text": t}
                                        for t in batch])
                    accepted.extend((job.id, text) for job, text in zip(result.queued, batch, strict=True))
                    break
                except EnqueueError:  # failing over: nothing of this batch was queued; again
                    refused += 1
                    time.sleep(0.2)
            time.sleep(0.03)

    try:
        producer = threading.Thread(target=produce)
        producer.start()
        while len(accepted) < 50 and producer.is_alive():
            time.sleep(0.02)
        old = cluster.primary_port()
        new = cluster.failover()
        assert new != old
        producer.join(timeout=60)
        assert not producer.is_alive()
        statuses = _wait_final([job_id for job_id, _ in accepted], timeout=45)
    finally:
        worker.stop()
    assert len(accepted) == len(texts)
    missing = [job_id for job_id, status in statuses.items() if status != "delivered"][:3]
    assert Counter(statuses.values()) == {"delivered": len(texts)}, (Counter(statuses.values()), missing)
    wire = requests.get(f"{sandbox}/_sandbox/messages", timeout=10).json()["messages"]
    sent = Counter(m["body"].get("message", {}).get("text") for m in wire)
    assert {text: sent[text] for text in texts} == dict.fromkeys(texts, 1), "lost or duplicated on the wire"


def test_a_producer_without_its_replica_gets_a_clear_error_and_nothing_is_queued(
        cluster: SentinelCluster, via_sentinel: str) -> None:
    from igsend.core.celery_app import queue_keys
    from igsend.core.store import PENDING_KEY, get_redis, idempotency_key, job_key
    from producers import send_many
    from producers.enqueue import EnqueueError, NotReplicated

    cluster.wait_ready()
    primary = cluster.primary()
    primary.client().config_set("min-replicas-to-write", 0)  # writes stay allowed: the WAIT step must catch it
    for replica in cluster.replicas():
        replica.stop()
    client = get_redis()
    before = {key: client.llen(key) for key in queue_keys()}
    key = f"no-replica-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(NotReplicated) as caught:
        send_many([{"kind": "text", "recipient": "6543210987654321", "text": f"lonely {i}",
                    "idempotency_key": f"{key}-{i}"} for i in range(5)])
    assert isinstance(caught.value, EnqueueError)
    assert "0 of the 1 replica(s)" in str(caught.value) and "nothing was queued" in str(caught.value)
    assert time.monotonic() - started < 5
    # nothing half-queued: no message in the broker, no record, no pending entry, the idempotency keys free
    assert {key: client.llen(key) for key in queue_keys()} == before
    assert not [k for k in client.scan_iter(job_key("*"), count=1000) if not k.endswith(":attempts")
                and client.hget(k, "status") not in ("delivered", "dead", "unknown")]
    assert client.zcard(PENDING_KEY) == 0
    assert not client.exists(*[idempotency_key("default", f"{key}-{i}") for i in range(5)])
