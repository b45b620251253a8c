"""The one Celery app both sides use: producers publish with it by task name, ``workers.app`` adds the task.

It knows nothing of either side, so publishing needs only the broker settings, not the Graph client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from igsend.core.redis_url import is_sentinel_url, sentinel_parts
from igsend.core.settings import Settings, get_settings

TASK_NAME = "igsend.send_message"
QUEUE = "igsend"

# Where a message waits. Kombu's Redis transport keeps one list per priority step: a message goes to the list of
# ``priority_steps[bisect(priority_steps, p) - 1]`` (``Channel.priority``; a step of 0 is the bare queue name,
# any other ``igsend<sep><step>``), and workers BRPOP the lists in the order ``priority_steps`` lists them
# (kombu redis.py, ``_q_for_pri``, ``priority``, ``_brpop_start``). A message published without a priority gets 0
# (kombu virtual/base.py: ``properties.setdefault('priority', priority or default_priority)``, and a stored one
# without it reads as ``default_priority`` 0), and celery-node LPUSHes to the bare queue name whatever it is
# told. So the bare list ``igsend`` must be the normal backlog: every raw publish (Celery's ``send_task``, plain
# kombu, celery-node) then waits in line with igsend's own new messages, FIFO, instead of overtaking them.
#
# Jobs whose retry time or rate slot has come must not wait behind that backlog: they go to step 2, which is
# listed first. The list is deliberately not sorted: with [2, 6, 3, 9, 0] kombu's bisect maps priority 2 to step 2
# and every other priority (0, 1, 3-9, none) to step 0; tests/test_raw_clients.py pins this against kombu
# itself. Steps 6, 3 and 9 receive nothing now; they are still read so that messages queued by an igsend
# before this layout (new ones at 6) drain, oldest first. Should a kombu ever sort the steps, nothing is lost:
# due jobs would just queue behind the backlog.
PRIORITY_STEPS = [2, 6, 3, 9, 0]
DUE_PRIORITY = 2
NEW_PRIORITY = 0
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
    """The Redis lists that hold the igsend queue, in the order workers pop them (due jobs first)."""
    return [QUEUE if step == 0 else f"{QUEUE}{_PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


#: Kombu's hash of messages workers have taken and not yet acknowledged (transport option ``unacked_key``).
UNACKED_KEY = "unacked"

# Does a slice of one queue list (or, with no range, kombu's unacked hash) hold a message with this task id? A
# plain substring search first (C speed), then a JSON decode of the rare candidate to compare the header exactly.
_IN_BROKER = """
local id = ARGV[1]
local items
if ARGV[2] == 'hash' then
  items = redis.call('HVALS', KEYS[1])
else
  items = redis.call('LRANGE', KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
for _, item in ipairs(items) do
  if string.find(item, id, 1, true) then
    local ok, envelope = pcall(cjson.decode, item)
    if ok and type(envelope) == 'table' and envelope[1] ~= nil then envelope = envelope[1] end
    if ok and type(envelope) == 'table' and type(envelope.headers) == 'table' and envelope.headers.id == id then
      return {1, #items}
    end
  end
end
return {0, #items}
"""
#: Messages one server-side scan step reads: ~12 ms of Redis time, so other clients never wait longer.
IN_BROKER_SLICE = 5000


def in_broker(client: Any, job_id: str) -> bool:
    """Whether a message for ``job_id`` is queued or in a worker's hands (kombu's ``unacked`` hash).

    For ids with no job record: a message another Celery client published has none until a worker takes it.
    The queue is scanned on the server in slices (measured: ~2.4 ms of Redis time per 1,000 queued messages,
    no message crosses the network), so callers ask only when there is no record. Scanning from the newest end
    misses nothing: publishes push the rest further along, and a message a worker takes meanwhile is found in
    the unacked hash, read last.
    """
    if not job_id:
        return False
    script = client.register_script(_IN_BROKER)
    for key in queue_keys():
        start = 0
        while True:
            found, read = script(keys=[key], args=[job_id, start, start + IN_BROKER_SLICE - 1])
            if found:
                return True
            if read < IN_BROKER_SLICE:
                break
            start += IN_BROKER_SLICE
    return bool(script(keys=[UNACKED_KEY], args=[job_id, "hash"])[0])


def _sentinel_broker_url(url: str) -> str:
    hosts, db, username, password = sentinel_parts(url)
    auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@" if password is not None else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in hosts)


# Every sentinel:// address uses Celery's Sentinel transport with igsend's connections (igsend.core.sentinel).
# Kombu picks a transport by the URL's scheme, for the first of the ;-separated sentinels and again for each
# alternate it reconnects to; with the stock one there, a demoted primary's NOREPLICAS ends the worker
# ("Unrecoverable error"; seen in tests/test_failover.py). So the scheme itself names igsend's transport.
TRANSPORT_ALIASES["sentinel"] = "igsend.core.sentinel:SentinelTransport"


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


#: One app per Redis (a process that routes to several groups publishes through each group's broker).
_apps: dict[tuple[str, str], tuple[Settings, Celery]] = {}


def get_app() -> Celery:
    """The app for the settings in force, built once per reading of them and per Redis: when the settings are read
    again (``get_settings.cache_clear()``, as ``igsend.core.store.forget_connections`` does after a change of
    ``IGSEND_REDIS_URL``), the next call builds a new app, with the new broker. Inside
    ``igsend.core.settings.using_redis`` (a group's block) it is that group's app."""
    settings = get_settings()
    where = (settings.redis_url, settings.redis_master)
    built = _apps.get(where)
    if built is None or built[0] is not settings:
        app = Celery("igsend")
        app.conf.update(celery_config(settings))
        built = _apps[where] = (settings, app)
    return built[1]
