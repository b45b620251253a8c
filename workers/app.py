"""The Celery app as a worker runs it (``celery -A workers.app worker``): the shared app plus the task,
the delayed-job scheduler and the per-process metrics endpoint."""

from __future__ import annotations

import logging

import redis
from celery.signals import worker_ready, worker_shutdown

from igsend.core.celery_app import get_app
from workers import tasks  # noqa: F401 - registers igsend.send_message
from workers.metrics import serve_worker_metrics
from workers.scheduler import Scheduler

app = get_app()
# Ends the job of a message whose body does not decode (workers/raw.py).
app.conf.worker_consumer = "workers.raw:Consumer"
_scheduler: Scheduler | None = None
log = logging.getLogger("igsend.worker")


@worker_ready.connect
def _start_scheduler(**_: object) -> None:
    global _scheduler
    _scheduler = Scheduler()
    _scheduler.start()
    serve_worker_metrics()
    _warn_about_redis()


def _warn_about_redis() -> None:
    """Say at start when Redis itself could lose queued messages (eviction, no persistence)."""
    from igsend.core.store import get_redis, redis_warnings

    try:
        for warning in redis_warnings(get_redis()):
            log.warning("%s", warning)
    except redis.RedisError as exc:  # a warning about risks must never stop the worker
        log.warning("could not check Redis's settings: %s", exc)


@worker_shutdown.connect
def _stop_scheduler(**_: object) -> None:
    if _scheduler is not None:
        _scheduler.stop()
