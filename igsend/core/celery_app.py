"""The one Celery app both sides use: producers publish with it by task name, ``workers.app`` adds the task.

It knows nothing of either side, so publishing needs only the broker settings, not the Graph client.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import quote

from celery import Celery

from igsend.core.settings import Settings, get_settings
from igsend.core.store import is_sentinel_url, sentinel_parts

TASK_NAME = "igsend.send_message"
QUEUE = "igsend"

# Kombu's Redis transport keeps one list per priority step and always pops the lower number first
# (kombu redis.py, _brpop_start). New messages go in at NEW_PRIORITY; jobs whose retry time or rate slot has
# come are put back at DUE_PRIORITY so they never wait behind a backlog of new ones.
PRIORITY_STEPS = [0, 3, 6, 9]
DUE_PRIORITY = 0
NEW_PRIORITY = 6
_PRIORITY_SEP = "\x06\x16"


def summarize_arguments(args: Any) -> str:
    """What logs and Flower show as the task's arguments: who, to whom, what kind; never the text."""
    document = args[0] if isinstance(args, list | tuple) and args else None
    if not isinstance(document, dict):
        return f"[<{type(document).__name__}>]" if args else "[]"
    return repr([{key: str(document.get(key))[:100] for key in ("kind", "recipient", "account")}])


def publish(app: Celery, producer: Any, job_id: str, message: dict[str, Any], *, priority: int,
            argsrepr: str | None = None) -> None:
    """Publish one ``igsend.send_message`` with Celery's own message builder and sender.

    ``app.send_task`` would also subscribe the producer to the task's result channel and build an
    AsyncResult, for callers that ``.get()`` Celery results; igsend's callers poll job records instead, and
    skipping that halves the cost of a bulk enqueue.
    """
    if argsrepr is None:  # Celery's default would be the whole document, text included
        argsrepr = summarize_arguments([message])
    # ignore_result: the job record is the result; a Celery result per message would double what each
    # message leaves in Redis. Raw Celery clients, who publish without it, still get theirs.
    task_message = app.amqp.create_task_message(job_id, TASK_NAME, [message], {}, argsrepr=argsrepr,
                                                ignore_result=True)
    # declare=[]: workers declare the queue; re-declaring it on every publish costs a check per message.
    app.amqp.send_task_message(producer, TASK_NAME, task_message, queue=QUEUE, priority=priority, declare=[])


def queue_keys() -> list[str]:
    """The Redis lists that hold the igsend queue, highest priority first."""
    return [QUEUE if step == 0 else f"{QUEUE}{_PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]

def _sentinel_broker_url(url: str) -> str:
    hosts, db, username, password = sentinel_parts(url)
    auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@" if password is not None else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in hosts)


def celery_config(settings: Settings) -> dict[str, Any]:
    # The visibility timeout: seconds after which a message a worker took but never acknowledged goes back on
    # the queue. Kombu's default is one hour; a SIGKILLed worker's messages must come back within a minute, and
    # igsend never publishes ETA/countdown messages (delays live in igsend:delayed), so a short timeout
    # redelivers nothing early. It is derived from the send deadline (Settings.visibility_timeout).
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for abandoned messages every 5 s instead of kombu's 10 s x 10 (kombu redis.py docstring).
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "socket_keepalive": True,
        "health_check_interval": 10,
        # No retry_on_timeout: a replayed pipeline could publish a message twice, and kombu only batches
        # publishes (send_many) when it is off. Celery's publish retry covers broker hiccups instead.
        "priority_steps": PRIORITY_STEPS,
        "sep": _PRIORITY_SEP,
    }
    url = settings.redis_url
    if is_sentinel_url(url):
        # Celery's Sentinel transport and result backend (docs: "Using Sentinel"; kombu SentinelChannel, celery
        # SentinelBackend): the ;-separated sentinels plus master_name; both ask the sentinels for the primary on
        # every new connection, so they follow a failover. Kombu takes the db and password from the first part
        # and Celery's backend from the first as well: every part gets them, whichever one named them.
        url = _sentinel_broker_url(url)
        transport["master_name"] = settings.redis_master
        transport["sentinel_kwargs"] = {"socket_connect_timeout": 1, "socket_timeout": 1}
    return {
        "broker_url": url,
        **({"broker_transport": "igsend.core.sentinel:SentinelTransport"} if is_sentinel_url(url) else {}),
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {**transport},
        "visibility_timeout": settings.visibility_timeout,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # JSON only: pickle would let anyone who can write to Redis run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.result_ttl,
        "task_default_queue": QUEUE,
        "task_routes": {TASK_NAME: {"queue": QUEUE}},
        # Acknowledge after the work, put a killed worker's task back, and take one message per free slot.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Publishing: retry through a broker hiccup, then raise (never report an id that is not queued).
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 5, "interval_start": 0.1, "interval_step": 0.5,
                                      "interval_max": 2},
        # Flower: workers report received/started/succeeded/failed (IGSEND_TASK_EVENTS=0 turns that off for
        # ~20 % more throughput; Flower then shows workers but not tasks). No "sent" events from producers:
        # one extra publish per message halved bulk enqueue speed, and a worker's "received" follows at once.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        # igsend limits rates in Redis; Celery's per-worker token buckets would only cost time per message.
        "worker_disable_rate_limits": True,
        "enable_utc": True,
    }


@lru_cache(maxsize=1)
def get_app() -> Celery:
    app = Celery("igsend")
    app.conf.update(celery_config(get_settings()))
    return app
