"""Prometheus metrics for what Flower does not show.

Per worker process (served on ``IGSEND_METRICS_PORT`` when set): attempts and outcomes by account, kind
and Graph error code, retries, rate-limiter waits, Graph latency, token refreshes, checks and reloads. From Redis
(``igsend metrics``, one exporter per deployment): queue depth, delayed and held jobs, DLQ size, account health,
seconds until each account's token expires, and each status-callback endpoint's counters, queue and lag.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:
    import redis

ATTEMPTS = Counter("igsend_attempts", "POSTs to the Graph API by outcome and Graph error code",
                   ["account", "kind", "outcome", "code"])
FINISHED = Counter("igsend_messages", "Messages that reached a final status", ["account", "kind", "status"])
RETRIES = Counter("igsend_retries", "Messages scheduled for another attempt", ["account", "reason"])
RATE_WAITS = Counter("igsend_rate_limit_waits", "Admissions that had to wait for a rate slot",
                     ["account", "how"])
ORDER_WAITS = Counter("igsend_order_waits", "Ordered messages parked behind an earlier one of their conversation",
                      ["account"])
HELD_CONVERSATIONS = Counter("igsend_held_conversations", "Ordered conversations held by a dead message "
                             "(IGSEND_ORDERED_DEAD=hold) until it is replayed or released", ["account"])
TOKEN_REFRESHES = Counter("igsend_token_refreshes", "Refreshes of Instagram-Login tokens (refresh = true) by outcome",
                          ["account", "outcome"])
TOKEN_CHECKS = Counter("igsend_token_checks", "debug_token lookups of Facebook-Login tokens by outcome",
                       ["account", "outcome"])
TOKEN_RELOADS = Counter("igsend_token_reloads", "New tokens this process read from a token_file", ["account"])
RECONCILED = Counter("igsend_reconciled", "Lost answers settled by asking the Conversations API: delivered (found), "
                     "resent (not found after the horizon) or unknown (could not tell)", ["account", "result"])
GRAPH_LATENCY = Histogram("igsend_graph_latency_seconds", "Time from POST to Meta's answer", ["account"],
                          buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 15))


def serve_worker_metrics() -> int | None:
    """Start the per-process endpoint when ``IGSEND_METRICS_PORT`` is set; returns the port.

    It listens on ``IGSEND_METRICS_HOST`` (default 127.0.0.1): the metrics name accounts and recipients'
    traffic, so they are private unless the deployment says otherwise (compose sets 0.0.0.0 inside its
    network, where Prometheus scrapes them)."""
    port = os.environ.get("IGSEND_METRICS_PORT")
    if not port:
        return None
    start_http_server(int(port), addr=os.environ.get("IGSEND_METRICS_HOST") or "127.0.0.1")
    return int(port)


class RedisStateCollector(Collector):
    """Reads queue and DLQ sizes from Redis at scrape time, so every replica reports the same truth."""

    def collect(self) -> Iterator[Metric]:
        from igsend.core import lanes
        from igsend.core.account_state import all_states
        from igsend.core.celery_app import queue_keys
        from igsend.core.store import DELAYED_KEY, DLQ_INDEX_KEY, STATS_KEY, get_redis

        client = get_redis()
        pipe = client.pipeline(transaction=False)
        keys = queue_keys()
        for key in keys:
            pipe.llen(key)
        pipe.zcard(DELAYED_KEY)
        pipe.zcard(DLQ_INDEX_KEY)
        pipe.hget(STATS_KEY, "republished_total")
        *lengths, delayed, dead, republished = pipe.execute()
        depth = sum(lengths)
        yield GaugeMetricFamily("igsend_queue_depth", "Messages waiting on the Celery queue", value=depth)
        waiting = GaugeMetricFamily("igsend_lane_waiting", "New messages waiting in their account's lane for the "
                                    "dispatcher", labels=["account", "send_class", "priority"])
        in_lanes = lanes.waiting(client)
        for account, counts in sorted(in_lanes.items()):
            for lane, count in sorted(counts.items()):
                send_class, _, priority = lane.partition("/")
                waiting.add_metric([account, send_class, priority], count)
        yield waiting
        yield GaugeMetricFamily("igsend_waiting", "Messages waiting to be sent: on the Celery queue and in the lanes "
                                "(what to scale workers on)",
                                value=depth + sum(sum(counts.values()) for counts in in_lanes.values()))
        yield GaugeMetricFamily("igsend_delayed", "Jobs waiting for a retry or a rate slot", value=delayed)
        yield GaugeMetricFamily("igsend_dlq_size", "Entries in the dead-letter queue", value=dead)
        memory = client.info("memory")
        yield GaugeMetricFamily("igsend_redis_used_memory_bytes", "Redis used_memory", value=memory["used_memory"])
        yield GaugeMetricFamily("igsend_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)",
                                value=memory.get("maxmemory", 0))
        yield CounterMetricFamily("igsend_republished", "Jobs the sweeper published again: messages the broker lost",
                                  value=int(republished or 0))
        held = GaugeMetricFamily("igsend_held", "Jobs held while their account is unhealthy", labels=["account"])
        healthy = GaugeMetricFamily("igsend_account_healthy", "1 when the account may send", labels=["account"])
        for state in all_states(client=client):
            held.add_metric([state["account"]], state["held"])
            ok = state["health"] == "healthy" and not state["paused_until"]
            healthy.add_metric([state["account"]], 1.0 if ok else 0.0)
        yield held
        yield healthy
        yield from _token_metrics(client)
        yield from _callback_metrics(client)


def _token_metrics(client: redis.Redis) -> Iterator[Metric]:
    """From the token facts workers publish (igsend.core.account_state.token_view)."""
    import time

    from igsend.core.account_state import token_view
    from igsend.core.presence import read
    from igsend.core.store import ACCOUNTS_INDEX_KEY, token_key

    known = read(client)
    names = sorted(set(known.known) | set(known.served()) | cast(set[str], client.smembers(ACCOUNTS_INDEX_KEY)))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(token_key(name))
    now = time.time()
    expiry = GaugeMetricFamily("igsend_token_expiry_seconds", "Seconds until the account's token expires (negative "
                               "once expired); absent when it never expires or is not known", labels=["account"])
    data_access = GaugeMetricFamily("igsend_token_data_access_expiry_seconds", "Seconds until the data access of "
                                    "the account's Facebook-Login token ends", labels=["account"])
    problem = GaugeMetricFamily("igsend_token_problem", "1 when the account's last token refresh or check failed "
                                "or Meta says the token is not valid", labels=["account"])
    for name, raw in zip(names, pipe.execute(), strict=True):
        if not raw:
            continue
        token = token_view(raw, now)
        if token["expires_in"] is not None:
            expiry.add_metric([name], token["expires_in"])
        if token["data_access_expires_at"]:
            data_access.add_metric([name], round(token["data_access_expires_at"] - now))
        problem.add_metric([name], 1.0 if token["problem"] or token["valid"] is False else 0.0)
    yield expiry
    yield data_access
    yield problem


def _callback_metrics(client: redis.Redis) -> Iterator[Metric]:
    """Per endpoint of IGSEND_CALLBACKS_FILE (the exporter's own setting), from its state in Redis
    (igsend.core.callbacks.state); nothing without the file."""
    import logging

    from igsend.core import callbacks

    try:
        endpoints = callbacks.load()
    except callbacks.CallbacksFileError as exc:  # the scrape goes on without these
        logging.getLogger("igsend.metrics").warning("%s", exc)
        return
    if not endpoints:
        return
    sent = CounterMetricFamily("igsend_callbacks_sent", "Callbacks the endpoint answered with 2xx", labels=["endpoint"])
    failed = CounterMetricFamily("igsend_callbacks_failed", "Callback events given up on after the last try (or "
                                 "on 410 Gone)", labels=["endpoint"])
    retries = CounterMetricFamily("igsend_callbacks_retries", "Callback tries that failed and were scheduled again",
                                  labels=["endpoint"])
    queued = GaugeMetricFamily("igsend_callbacks_queued", "Callback events waiting to be sent to the endpoint (queued "
                               "or in flight; not those held behind a retry)", labels=["endpoint"])
    lag = GaugeMetricFamily("igsend_callbacks_lag_seconds", "Age of the oldest callback event waiting in the "
                            "endpoint's queue (0 when none waits)", labels=["endpoint"])
    enabled = GaugeMetricFamily("igsend_callbacks_enabled", "1 unless the endpoint was disabled (410 Gone)",
                                labels=["endpoint"])
    for name in endpoints:
        state = callbacks.state(client, name)
        sent.add_metric([name], state["sent"])
        failed.add_metric([name], state["failed_total"])
        retries.add_metric([name], state["retries"])
        queued.add_metric([name], state["queued"] + state["sending"])
        lag.add_metric([name], round(state["lag_seconds"], 3))
        enabled.add_metric([name], 0.0 if state["state"] == "disabled" else 1.0)
    yield from (sent, failed, retries, queued, lag, enabled)


def waiting_now() -> dict[str, int]:
    """What waits to be sent: on the Celery queue and in the accounts' lanes (what KEDA scales workers on)."""
    from igsend.core import lanes
    from igsend.core.celery_app import queue_keys
    from igsend.core.store import get_redis

    client = get_redis()
    pipe = client.pipeline(transaction=False)
    for key in queue_keys():
        pipe.llen(key)
    queue = sum(pipe.execute())
    in_lanes = lanes.waiting_total(client)
    return {"waiting": queue + in_lanes, "queue": queue, "lanes": in_lanes}


def serve_exporter(port: int, host: str = "127.0.0.1") -> None:
    """``igsend metrics``: the Redis-state exporter, in the foreground: ``/metrics`` for Prometheus and
    ``/waiting.json`` (:func:`waiting_now`) for KEDA's metrics-api scaler."""
    import json
    from collections.abc import Callable, Iterable
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import redis
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    REGISTRY.register(RedisStateCollector())
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/waiting.json":
            return cast(Iterable[bytes], metrics(environ, start_response))
        try:
            body, status = json.dumps(waiting_now()).encode(), "200 OK"
        except redis.RedisError as exc:  # KEDA keeps the last value it read and retries
            body, status = json.dumps({"error": type(exc).__name__}).encode(), "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the name the base class gives it
            pass

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=QuietHandler)
    print(f"igsend metrics on http://{host}:{port}/metrics (and /waiting.json)", flush=True)
    server.serve_forever()
