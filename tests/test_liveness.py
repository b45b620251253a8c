"""The worker's liveness probe (``python -m workers.liveness``, what ops/k8s runs): it passes while a real worker
consumes the igsend queue and fails once the worker can no longer consume, though its process still exists: when
its queue consumer is cancelled, and when its broker is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import producers
from tests.conftest import reset_client_caches, wait_until, worker_env

#: Short for the test; the manifests use the default (workers.liveness.MAX_AGE).
MAX_AGE = 8


def probe(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.liveness", "--max-age", str(MAX_AGE)],
                          env={**os.environ, "IGSEND_LIVENESS_FILE": str(path)}, capture_output=True, text=True,
                          timeout=30)


def test_the_probe_fails_when_the_worker_stops_consuming(sandbox: str, accounts_file, tmp_path, clean) -> None:
    from celery import Celery

    from igsend.core.celery_app import QUEUE, celery_config
    from igsend.core.settings import Settings
    from igsend.local.embedded_redis import start_redis
    from igsend.local.processes import start_worker

    alive = tmp_path / "alive"
    assert probe(alive).returncode == 1  # no worker yet: the startup probe waits

    broker = start_redis(tmp_path / "redis")  # its own Redis, so the test can take it away
    previous = os.environ.get("IGSEND_REDIS_URL")
    os.environ["IGSEND_REDIS_URL"] = broker.url
    reset_client_caches()
    control = Celery("liveness-test")
    control.conf.update(celery_config(Settings(redis_url=broker.url)))
    worker = start_worker(env=worker_env(broker.url, sandbox, accounts_file, IGSEND_LIVENESS_FILE=str(alive)),
                          log_path=tmp_path / "worker.log", concurrency=2)
    try:
        wait_until(lambda: probe(alive).returncode == 0, timeout=10, interval=0.5)
        assert producers.send_text("alive1", "still here").result(timeout=30)["recipient_id"] == "alive1"

        # The queue's consumer cancelled: the process lives on but takes nothing from the queue.
        node = f"igsend-{worker.process.pid}-0@{socket.gethostname()}"
        control.control.cancel_consumer(QUEUE, destination=[node], reply=True, timeout=5)
        failed = wait_until(lambda: (r := probe(alive)).returncode == 1 and r, timeout=MAX_AGE + 20, interval=1)
        assert "does not consume" in failed.stderr
        control.control.add_consumer(QUEUE, destination=[node], reply=True, timeout=5)
        wait_until(lambda: probe(alive).returncode == 0, timeout=20, interval=1)

        # The broker gone: Celery keeps trying to reconnect, the probe says the worker does not consume.
        broker.stop()
        wait_until(lambda: probe(alive).returncode == 1, timeout=MAX_AGE + 20, interval=1)
        assert worker.alive()  # the process exists: only the probe can tell that it is useless
    finally:
        control.close()
        worker.kill()
        broker.stop()
        if previous is None:
            os.environ.pop("IGSEND_REDIS_URL", None)
        else:
            os.environ["IGSEND_REDIS_URL"] = previous
        reset_client_caches()


def test_several_processes_each_need_a_fresh_file(tmp_path) -> None:
    from workers.liveness import problem

    path = str(tmp_path / "alive")
    for index in (0, 1):
        Path(f"{path}.{index}").touch()
    assert problem(path, MAX_AGE) is None
    os.utime(f"{path}.1", (0, 0))
    assert "alive.1" in (problem(path, MAX_AGE) or "")
