"""The Celery app as a worker runs it (``celery -A workers.app worker``): the shared app plus the task,
the delayed-job scheduler and the per-process metrics endpoint."""

from __future__ import annotations

from celery.signals import worker_ready, worker_shutdown

from producers.celery_app import get_app
from workers import tasks  # noqa: F401 - registers igsend.send_message
from workers.metrics import serve_worker_metrics
from workers.scheduler import Scheduler

app = get_app()
_scheduler: Scheduler | None = None


@worker_ready.connect
def _start_scheduler(**_: object) -> None:
    global _scheduler
    _scheduler = Scheduler()
    _scheduler.start()
    serve_worker_metrics()


@worker_shutdown.connect
def _stop_scheduler(**_: object) -> None:
    if _scheduler is not None:
        _scheduler.stop()
