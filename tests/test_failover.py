"""Redis Sentinel: igsend follows a failover, and with IGSEND_REDIS_REPLICA_ACKS nothing accepted is lost.

Real processes: a primary, two replicas and three sentinels (igsend.local.sentinel, 1 s down-after, 3 s failover
timeout), the session's sandbox, and an ``igsend worker`` given only the ``sentinel://`` URL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from igsend.local.sentinel import SentinelCluster, start_cluster
from tests.conftest import environment, reset_client_caches, worker_env

#: The cluster's replicas, and so the acks igsend asks for: WAIT on fewer than every replica is not enough, since a
#: forced failover re-points the replicas one at a time (docs/redis.md, Sentinel).
REPLICAS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    started = start_cluster(tmp_path_factory.mktemp("sentinel"), replicas=REPLICAS)
    yield started
    started.stop()


@pytest.fixture
def via_sentinel(cluster: SentinelCluster) -> Iterator[str]:
    """This process's producers talk to the cluster through the sentinels, with replica acks on."""
    with environment(IGSEND_REDIS_URL=cluster.url, IGSEND_REDIS_REPLICA_ACKS=str(REPLICAS)):
        yield cluster.url


def _wait_final(job_ids: list[str], timeout: float) -> dict[str, str]:
    from igsend.core import records
    from igsend.core.store import get_redis

    deadline = time.monotonic() + timeout
    while True:
        found = dict(zip(job_ids, (s.value for s in records.statuses(get_redis(), job_ids)), strict=True))
        if all(s in ("delivered", "dead", "unknown") for s in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.mark.scenario
@pytest.mark.parametrize("event", ["failover", "kill-primary"])
def test_sends_through_a_failover_without_losing_or_doubling(event: str, cluster: SentinelCluster, via_sentinel: str,
                                                            sandbox: str, accounts_file: Path,
                                                            tmp_path: Path) -> None:
    """150 texts while the primary changes: ``SENTINEL FAILOVER``, or SIGKILL of the primary (a supervisor then
    starts it again, as a replica). With replica acks on every replica, nothing accepted is lost and nothing is
    sent twice: a job whose admission the replicas did not confirm is not sent, and one that was sent keeps its
    confirmed in-flight mark on the new primary (at worst it ends ``unknown``)."""
    from igsend.local.processes import start_worker
    from producers import EnqueueError, send_many

    cluster.wait_ready()
    requests.delete(f"{sandbox}/_sandbox/messages", timeout=5).raise_for_status()
    worker = start_worker(env=worker_env(via_sentinel, sandbox, accounts_file,
                                         IGSEND_REDIS_REPLICA_ACKS=str(REPLICAS)),
                          log_path=tmp_path / "worker.log", concurrency=16)
    run = uuid.uuid4().hex[:8]
    texts = [f"{event} {run} {i}" for i in range(150)]
    accepted: list[tuple[str, str]] = []
    refused = 0

    def produce() -> None:
        nonlocal refused
        for start in range(0, len(texts), 10):
            batch = texts[start:start + 10]
            while True:
                try:
                    # with idempotency keys: a refused call's messages that survived on the new primary are
                    # answered with their jobs, not queued twice
                    result = send_many([{"kind": "text", "recipient": "6543210987654321", "text": t,
                                         "idempotency_key": t.replace(" ", "-")} for t in batch])
                    accepted.extend((job.id, text) for job, text in zip(result.jobs, batch, strict=True))
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
        if event == "failover":
            new = cluster.failover()
        else:
            new = cluster.kill_primary()
            cluster.restart(cluster.server(old))  # as a supervisor would: back, and the sentinels make it a replica
        assert new != old
        producer.join(timeout=90)
        assert not producer.is_alive()
        statuses = _wait_final([job_id for job_id, _ in accepted], timeout=90)
    finally:
        worker.stop()
    assert len(accepted) == len(texts)
    counts = Counter(statuses.values())
    lost = {job_id: status for job_id, status in statuses.items() if status not in ("delivered", "dead", "unknown")}
    assert not lost, f"lost: {len(lost)} ({Counter(lost.values())}); all: {counts}"
    wire = requests.get(f"{sandbox}/_sandbox/messages", timeout=10).json()["messages"]
    sent = Counter(m["body"].get("message", {}).get("text") for m in wire)
    assert [text for text in texts if sent[text] > 1] == [], f"sent twice; statuses {counts}"
    status_of = {text: statuses[job_id] for job_id, text in accepted}
    assert [text for text in texts if status_of[text] == "delivered" and sent[text] != 1] == []
    assert counts["dead"] == 0 and counts["unknown"] <= 5, counts  # unknown: sent, but the record did not survive


def test_every_sentinel_address_reconnects_through_igsends_transport() -> None:
    """Kombu reconnects to the next ;-separated sentinel as an alternate URL and picks its transport by scheme:
    each must be igsend's (a NOREPLICAS from a demoted primary is then a reconnect, not the worker's end)."""
    from celery import Celery

    from igsend.core.celery_app import celery_config
    from igsend.core.sentinel import SentinelTransport
    from igsend.core.settings import Settings

    config = celery_config(Settings(redis_url="sentinel://127.0.0.1:1;sentinel://127.0.0.1:2;sentinel://127.0.0.1:3/0"))
    connection = Celery("alternates", set_as_current=False, config_source=config).connection_for_read()
    assert connection.get_transport_cls() is SentinelTransport
    for alternate in connection.alt:
        connection.switch(alternate)  # what kombu's failover does; nothing connects yet
        assert connection.get_transport_cls() is SentinelTransport, alternate


def test_health_says_when_replica_acks_do_not_match_the_replicas(cluster: SentinelCluster, via_sentinel: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from igsend.core.store import get_redis, redis_warnings

    cluster.wait_ready()
    assert not [w for w in redis_warnings(get_redis()) if "REPLICA_ACKS" in w]  # acks = every replica
    monkeypatch.setenv("IGSEND_REDIS_REPLICA_ACKS", "1")
    reset_client_caches()
    warning = next(w for w in redis_warnings(get_redis()) if "REPLICA_ACKS" in w)
    assert f"has {REPLICAS} replica(s)" in warning and f"IGSEND_REDIS_REPLICA_ACKS={REPLICAS}" in warning
    monkeypatch.setenv("IGSEND_REDIS_REPLICA_ACKS", "3")
    reset_client_caches()
    warning = next(w for w in redis_warnings(get_redis()) if "REPLICA_ACKS" in w)
    assert "producers are refused" in warning


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
    records_before = set(client.scan_iter(job_key("*"), count=1000))
    pending_before = set(client.zrange(PENDING_KEY, 0, -1))  # the failover tests' leftovers are not this call's
    key = f"no-replica-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotReplicated) as caught:
        send_many([{"kind": "text", "recipient": "6543210987654321", "text": f"lonely {i}",
                    "idempotency_key": f"{key}-{i}"} for i in range(5)])
    assert isinstance(caught.value, EnqueueError)
    assert f"0 of the {REPLICAS} replica(s)" in str(caught.value) and "taken back" in str(caught.value)
    assert "same idempotency keys" in str(caught.value)
    # nothing half-queued: no message in the broker, no record, no pending entry, the idempotency keys free
    assert {key: client.llen(key) for key in queue_keys()} == before
    assert not [k for k in set(client.scan_iter(job_key("*"), count=1000)) - records_before
                if not k.endswith(":attempts") and client.hget(k, "status") not in ("delivered", "dead", "unknown")]
    assert set(client.zrange(PENDING_KEY, 0, -1)) == pending_before
    assert not client.exists(*[idempotency_key("default", f"{key}-{i}") for i in range(5)])

