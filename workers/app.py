"""The Celery app as a worker runs it (``celery -A workers.app worker``): the shared app plus the task,
the delayed-job scheduler, the token keeper (workers.tokens), the per-process metrics endpoint and the liveness file."""

from __future__ import annotations

import logging

import redis
from celery.signals import worker_ready, worker_shutdown

from igsend.core import callbacks, tracing
from igsend.core.celery_app import get_app
from igsend.core.presence import Heartbeat
from workers import chunked, raw, tasks  # noqa: F401 - they register igsend.send_message and igsend.send_chunk
from workers.callbacks import CallbackSender
from workers.liveness import LivenessStep
from workers.metrics import serve_worker_metrics
from workers.scheduler import Scheduler
from workers.tokens import TokenKeeper

app = get_app()
if tracing.start("igsend-worker"):  # only when OTEL_* variables name an exporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]  # the instrumentation is untyped
    RequestsInstrumentor().instrument()
# Ends the job of a message whose body does not decode; raw's signal handlers end rejected and revoked ones.
app.conf.worker_consumer = raw.Consumer
# Touches IGSEND_LIVENESS_FILE while the consumer consumes (the liveness probe of ops/k8s reads it).
app.steps["consumer"].add(LivenessStep)
_scheduler: Scheduler | None = None
_heartbeat: Heartbeat | None = None
_tokens: TokenKeeper | None = None
_callbacks: CallbackSender | None = None
log = logging.getLogger("igsend.worker")


@worker_ready.connect
def _start_scheduler(sender: object = None, **_: object) -> None:
    global _scheduler, _heartbeat, _tokens, _callbacks
    _scheduler = Scheduler(budgets=_budgets())
    _scheduler.start()
    endpoints = callbacks.load()  # checked before Celery started (workers.run.config_problem)
    if endpoints:
        _callbacks = CallbackSender(endpoints)
        _callbacks.start()
    _tokens = TokenKeeper()  # token files re-read, expiry learned, refreshes (workers.tokens)
    _tokens.start()
    _heartbeat = _announce(getattr(sender, "hostname", None))
    serve_worker_metrics()
    _warn_about_redis()


def _budgets() -> dict[tuple[str, str], float]:
    """Each served account's budget per send class, for the dispatcher (igsend.core.lanes)."""
    from workers.accounts import BUDGETS, registry

    return {(account.name, send_class): account.rate(send_class)
            for account in registry().values() for send_class in BUDGETS}


def _warn_about_redis() -> None:
    """Say at start when Redis itself could lose queued messages (eviction, no persistence)."""
    from igsend.core.store import get_redis, redis_warnings

    try:
        for warning in redis_warnings(get_redis()):
            log.warning("%s", warning)
    except redis.RedisError as exc:  # a warning about risks must never stop the worker
        log.warning("could not check Redis's settings: %s", exc)


def _announce(hostname: str | None) -> Heartbeat:
    """Tell producers this worker is alive and which accounts it serves (public fields only, no token)."""
    from workers.accounts import registry

    heartbeat = Heartbeat(hostname, [account.public() for account in registry().values()])
    heartbeat.start()
    return heartbeat


@worker_shutdown.connect
def _stop_scheduler(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
    if _tokens is not None:
        _tokens.stop()
    if _scheduler is not None:
        _scheduler.stop()
    if _callbacks is not None:
        _callbacks.stop()
