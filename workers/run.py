"""``igsend worker``: start a Celery worker on the igsend queue with defaults fit for network-bound sends."""

from __future__ import annotations

import os

#: POSTs in flight per worker process. Sending is waiting on the network, so the threads pool runs many.
DEFAULT_CONCURRENCY = 64


def run_worker(*, concurrency: int | None = None, loglevel: str = "INFO", extra: list[str] | None = None) -> None:
    from workers.app import app
    from workers.logs import configure_logging

    configure_logging()
    concurrency = concurrency or int(os.environ.get("IGSEND_CONCURRENCY") or DEFAULT_CONCURRENCY)
    app.conf.worker_concurrency = concurrency
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
            "--queues", "igsend", "--hostname", f"igsend-{os.getpid()}@%h", "--without-mingle",
            "--without-gossip", *(extra or [])]
    app.worker_main(argv)
