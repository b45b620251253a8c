"""SIGTERM to the worker's main process, as Kubernetes sends it to PID 1 when it stops a pod (a scale-down by
KEDA, a rollout, a node drain): the worker stops taking messages, finishes the POSTs it has in flight, leaves
the rest on the queue for another worker, and exits well within the pod's grace period. Nothing is lost and
nothing reaches Meta twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import redis as redis_lib
import requests

import producers
from tests.conftest import queue_depth, received, reset_client_caches, wait_until, worker_env

IN_FLIGHT = 4
MESSAGES = 12
LATENCY_MS = 3000


def test_sigterm_mid_send_finishes_what_it_holds_and_hands_back_the_rest(redis_url: str, sandbox: str,
                                                                         accounts_file, tmp_path, clean) -> None:
    from igsend.core.settings import Settings
    from igsend.local.processes import start_worker

    isolated = redis_url.rsplit("/", 1)[0] + "/7"  # a database the session's worker does not consume
    client = redis_lib.Redis.from_url(isolated, decode_responses=True)
    client.flushdb()
    os.environ["IGSEND_REDIS_URL"] = isolated
    reset_client_caches()
    env = worker_env(isolated, sandbox, accounts_file)
    try:
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": LATENCY_MS}, timeout=5).raise_for_status()
        victim = start_worker(env=env, log_path=tmp_path / "victim.log", concurrency=IN_FLIGHT)
        jobs = [producers.send_text(f"term{i}", f"graceful {i}") for i in range(MESSAGES)]
        wait_until(lambda: sum(j.status().value == "sending" for j in jobs) == IN_FLIGHT, timeout=20)

        victim.process.send_signal(signal.SIGTERM)  # what the kubelet does to the container's PID 1
        stopped_at = time.monotonic()
        # The grace period the manifests give a worker derives from the same settings (tests/test_k8s.py).
        settings = Settings(send_deadline=float(env["IGSEND_SEND_DEADLINE"]))
        grace = settings.lock_ttl("media")
        assert victim.process.wait(timeout=grace) == 0
        took = time.monotonic() - stopped_at

        # It finished the POSTs it had started (their answers were recorded) and left the rest queued.
        statuses = Counter(j.status().value for j in jobs)
        assert statuses == {"delivered": IN_FLIGHT, "queued": MESSAGES - IN_FLIGHT}, (statuses, took)
        assert queue_depth(client) == MESSAGES - IN_FLIGHT
        assert client.hlen("unacked") == 0  # nothing left in the stopped worker's hands

        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
        successor = start_worker(env=env, log_path=tmp_path / "successor.log", concurrency=IN_FLIGHT)
        try:
            wait_until(lambda: all(j.status().final for j in jobs), timeout=60)
        finally:
            successor.stop()
        assert [j.status().value for j in jobs] == ["delivered"] * MESSAGES
        per_job = Counter(m["body"]["message"]["text"] for m in received(sandbox))
        assert per_job == {f"graceful {i}": 1 for i in range(MESSAGES)}  # each delivered exactly once
    finally:
        requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0}, timeout=5)
        client.flushdb()
        os.environ["IGSEND_REDIS_URL"] = redis_url
        reset_client_caches()
