"""Sending status callbacks (igsend.core.callbacks): signed per Standard Webhooks, at least once, a job's events in
order, each endpoint on threads of its own so a slow or dead one delays nothing else.

One thread per worker process keeps the callbacks lease; the process that holds it fans the streams out into the
endpoints' queues and runs one sender thread per endpoint. A sender takes a batch from its queue (moved to
``sending`` in the same step), sends the events of different jobs at once (up to :data:`CONCURRENCY`) and the
events of one job one after another, and removes each from ``sending`` when it is answered: 2xx is sent; any
other answer, a timeout or a refused address is tried again on the schedule (``Retry-After`` on 429/503), the
job's later events held behind it; 410 Gone disables the endpoint. After the last try the event is kept in
``failed`` for ``igsend callbacks replay``. A process that takes the lease over puts what was in ``sending`` back
at the head of the queue first: such an event may reach the endpoint twice, with the same ``webhook-id``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import redis
import requests
from standardwebhooks import Webhook

from igsend.core import callbacks, records
from igsend.core.callbacks import Endpoint, key
from igsend.core.store import PREFIX, get_redis
from workers.callback_http import RefusedAddress, session
from workers.logs import redact
from workers.scheduler import LEASE_SCRIPT
from workers.usage import retry_after

log = logging.getLogger("igsend.callbacks")

LEASE_KEY = f"{PREFIX}callbacks:leader"
#: Requests in flight per endpoint.
CONCURRENCY = 8
#: Events a sender takes from its queue at once.
BATCH = 64
#: The longest Retry-After honoured, seconds.
MAX_RETRY_AFTER = 24 * 3600

# KEYS: queue, sending. ARGV: n. Moves up to n events from the head of the queue to sending; returns them.
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('RPUSH', KEYS[2], unpack(items))
  redis.call('LTRIM', KEYS[1], #items, -1)
end
return items
"""
# KEYS: queue, sending. Puts what a previous holder left in sending back at the head of the queue, in order.
_RECOVER = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do redis.call('LPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
return #items
"""
# KEYS: a job's held events, the waiting set. ARGV: the job. Takes the job out of the waiting set when nothing of
# it is held any more (one step: an event held meanwhile keeps it there). 1 when taken out.
_RELEASE = """
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Answer:
    """What one try got: ``ok``, else the error (never the secret) and, for 429/503, Meta-style Retry-After."""

    ok: bool
    error: str = ""
    gone: bool = False
    retry_after: float | None = None


def payload(client: redis.Redis, endpoint: Endpoint, event: Mapping[str, Any]) -> dict[str, Any]:
    """The body: ``{"type", "timestamp", "data"}``; ``data`` is the job's status record for a ``message.*`` event
    (its text only when the endpoint asks for it), the inbound event's fields for an ``inbound.*`` one."""
    when = datetime.fromtimestamp(float(event["at"]), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, Any]
    if event["type"].startswith("inbound."):
        data = dict(event.get("inbound") or {})
    elif event["type"] == "test":
        data = {"endpoint": endpoint.name}
    else:
        data = records.read(client, event["job"]) or {"id": event["job"], "status": "not_found"}
        if not endpoint.include_text:
            data.pop("message", None)
        if event["type"] == "message.reaction":
            inbound = event.get("inbound") or {}
            data["reaction"] = {name: inbound.get(name, "") for name in ("mid", "reaction", "emoji", "action")}
    return {"type": event["type"], "timestamp": when, "data": data}


def send_once(http: requests.Session, endpoint: Endpoint, webhook_id: str, body: str) -> Answer:
    """One try: signed with the endpoint's secret for this moment, redirects not followed."""
    now = datetime.now(UTC)
    headers = {"Content-Type": "application/json", "User-Agent": "igsend-callbacks",
               "webhook-id": webhook_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(endpoint.secret).sign(webhook_id, now, body)}
    try:
        answer = http.post(endpoint.url, data=body.encode(), headers=headers, timeout=callbacks.TIMEOUT,
                           allow_redirects=False)
    except RefusedAddress as exc:
        return Answer(False, f"refused: {exc}")
    except requests.RequestException as exc:
        return Answer(False, f"no answer: {type(exc).__name__}")
    if 200 <= answer.status_code < 300:
        return Answer(True)
    wait = retry_after(answer.headers) or None if answer.status_code in (429, 503) else None
    return Answer(False, redact(f"HTTP {answer.status_code}: {answer.text[:200]}"), gone=answer.status_code == 410,
                  retry_after=wait)


class EndpointSender:
    """Sends one endpoint's events while ``leading`` is set."""

    def __init__(self, client: redis.Redis, endpoint: Endpoint, leading: threading.Event, stop: threading.Event, *,
                 interval: float = 0.05, clock: Callable[[], float] = time.time):
        self.client = client
        self.endpoint = endpoint
        self.leading = leading
        self.stop = stop
        self.interval = interval
        self.clock = clock
        self.http = session(allow_private=endpoint.allow_private, pool=CONCURRENCY)
        self.pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix=f"igsend-callback-{endpoint.name}")
        self._take = client.register_script(_TAKE)
        self._recover = client.register_script(_RECOVER)
        self._release = client.register_script(_RELEASE)
        self.recovered = False
        self.thread = threading.Thread(target=self._run, name=f"igsend-callbacks-{endpoint.name}", daemon=True)

    def key(self, part: str) -> str:
        return key(self.endpoint.name, part)

    def _run(self) -> None:
        while not self.stop.is_set():
            busy = False
            try:
                if self.leading.is_set():
                    busy = self.pass_once()
                else:
                    self.recovered = False
            except Exception:  # keep going after a Redis restart; the events stay where they were
                log.exception("callbacks to %s: a pass failed; again in a second", self.endpoint.name)
                self.stop.wait(1.0)
            if not busy:
                self.stop.wait(self.interval)

    def pass_once(self) -> bool:
        """One batch: due retries, then new events. Returns whether anything was sent."""
        if not self.recovered:
            self._recover(keys=[self.key("queue"), self.key("sending")])
            self.recovered = True
        if self.client.hget(self.key("stats"), "state") in ("disabled", b"disabled"):
            return False
        due = cast(list[Any], self.client.zrangebyscore(self.key("waiting"), "-inf", self.clock(), start=0,
                                                        num=BATCH))
        work: list[Callable[[], None]] = [partial(self._retry_held, _text(member)) for member in due]
        raws = [_text(raw) for raw in cast(list[Any], self._take(keys=[self.key("queue"), self.key("sending")],
                                                                 args=[BATCH]))]
        groups: dict[str, list[str]] = {}
        for raw in raws:
            groups.setdefault(_group(json.loads(raw)), []).append(raw)
        work += [partial(self._send_new, member, items) for member, items in groups.items()]
        if work:
            list(self.pool.map(lambda job: job(), work))
        return bool(work)

    def _send_new(self, member: str, raws: list[str]) -> None:
        """Events of one job (or one event of none), in order, straight from the queue."""
        if self.client.exists(callbacks.held_key(self.endpoint.name, member)):
            self._hold(member, raws, due=None)  # an earlier event of the job waits for a retry: behind it
            return
        for index, raw in enumerate(raws):
            event = json.loads(raw)
            answer = self._try(event)
            if answer.ok:
                self.client.lrem(self.key("sending"), 1, raw)
                continue
            event = self._failed_try(event, answer)
            if event is None:  # given up on, or the endpoint is gone: the job's next events go on
                self.client.lrem(self.key("sending"), 1, raw)
                continue
            self._hold(member, [json.dumps(event), *raws[index + 1:]], due=self._due(event, answer),
                       taken=raws[index:])
            return

    def _retry_held(self, member: str) -> None:
        """A job whose first held event is due: try it, then its next ones, until one fails or none is left."""
        held = callbacks.held_key(self.endpoint.name, member)
        while not self.stop.is_set():
            raw = self.client.lindex(held, 0)
            if raw is None:
                if self._release(keys=[held, self.key("waiting")], args=[member]):
                    return
                continue
            event = json.loads(raw)
            answer = self._try(event)
            if not answer.ok:
                after = self._failed_try(event, answer)
                if after is not None:
                    pipe = self.client.pipeline(transaction=True)
                    pipe.lset(held, 0, json.dumps(after))
                    pipe.zadd(self.key("waiting"), {member: self._due(after, answer)})
                    pipe.execute()
                    return
            self.client.lpop(held)

    def _hold(self, member: str, raws: list[str], *, due: float | None, taken: list[str] | None = None) -> None:
        """``raws`` wait behind the job's event being retried (due at ``due``; None: one is waiting already)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(callbacks.held_key(self.endpoint.name, member), *raws)
        if due is not None:
            pipe.zadd(self.key("waiting"), {member: due})
        else:  # the retry may have ended meanwhile: then these are due at once
            pipe.zadd(self.key("waiting"), {member: self.clock()}, nx=True)
        for raw in taken if taken is not None else raws:
            pipe.lrem(self.key("sending"), 1, raw)
        pipe.execute()

    def _try(self, event: dict[str, Any]) -> Answer:
        body = json.dumps(payload(self.client, self.endpoint, event), ensure_ascii=False, separators=(",", ":"))
        answer = send_once(self.http, self.endpoint, event["webhook_id"], body)
        if answer.ok:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.key("stats"), "sent", 1)
            pipe.hset(self.key("stats"), "last_sent_at", f"{self.clock():.3f}")
            pipe.execute()
        return answer

    def _failed_try(self, event: dict[str, Any], answer: Answer) -> dict[str, Any] | None:
        """Count a failed try. Returns the event to retry, or None when it was given up on (kept in ``failed``)."""
        tries = int(event.get("tries", 0)) + 1
        event = {**event, "tries": tries, "error": answer.error,
                 "first_try_at": event.get("first_try_at") or self.clock()}
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key("stats"), mapping={"last_error": answer.error, "last_error_at": f"{self.clock():.3f}"})
        if answer.gone:
            pipe.hset(self.key("stats"), mapping={"state": "disabled",
                                                  "disabled": f"the endpoint answered 410 Gone at "
                                                              f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"})
            log.warning("callbacks to %s: disabled (410 Gone); `igsend callbacks replay %s` enables it again",
                        self.endpoint.name, self.endpoint.name)
        if answer.gone or tries > len(callbacks.RETRY_SCHEDULE):
            pipe.rpush(self.key("failed"), json.dumps(event))
            pipe.ltrim(self.key("failed"), -callbacks.FAILED_MAX, -1)
            pipe.hincrby(self.key("stats"), "failed", 1)
            pipe.execute()
            log.warning("callbacks to %s: gave up on %s %s after %d tries: %s", self.endpoint.name, event["type"],
                        event["webhook_id"], tries, answer.error)
            return None
        pipe.hincrby(self.key("stats"), "retries", 1)
        pipe.execute()
        return event

    def _due(self, event: dict[str, Any], answer: Answer) -> float:
        wait = float(callbacks.RETRY_SCHEDULE[int(event["tries"]) - 1])
        if answer.retry_after is not None:
            wait = min(max(answer.retry_after, 0.0), MAX_RETRY_AFTER)
        return self.clock() + wait


def _group(event: Mapping[str, Any]) -> str:
    """Events of one job keep their order; an event of no job is a group of its own."""
    return str(event.get("job") or event["webhook_id"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CallbackSender:
    """One thread per worker process keeps (or waits for) the callbacks lease; the holder fans out and sends."""

    def __init__(self, endpoints: Mapping[str, Endpoint], client: redis.Redis | None = None, *,
                 interval: float = 0.05, lease: float = 10.0):
        self.client = client or get_redis()
        self.endpoints = dict(endpoints)
        self.interval = interval
        self.lease_ms = int(lease * 1000)
        self.me = f"callbacks-{uuid.uuid4().hex}"
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._lead = self.client.register_script(LEASE_SCRIPT)
        self.senders = [EndpointSender(self.client, endpoint, self.leading, self._stop, interval=interval)
                        for endpoint in self.endpoints.values()]
        self._thread = threading.Thread(target=self._run, name="igsend-callbacks", daemon=True)
        self._groups_ready = False

    def start(self) -> None:
        self._thread.start()
        for sender in self.senders:
            sender.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sender in self.senders:
            sender.thread.join(timeout=callbacks.TIMEOUT + 5)
            sender.pool.shutdown(wait=False, cancel_futures=True)
        if self.leading.is_set():
            try:
                self.client.delete(LEASE_KEY)
            except redis.RedisError:
                pass

    def _run(self) -> None:
        renewed = 0.0
        while not self._stop.is_set():
            moved = 0
            try:
                if time.monotonic() - renewed > self.lease_ms / 3000 or not self.leading.is_set():
                    if self._lead(keys=[LEASE_KEY], args=[self.me, self.lease_ms]):
                        renewed = time.monotonic()
                        self.leading.set()
                    else:
                        self.leading.clear()
                if self.leading.is_set():
                    if not self._groups_ready:
                        callbacks.ensure_groups(self.client)
                        self._groups_ready = True
                    enabled = [e for e in self.endpoints.values()
                               if self.client.hget(key(e.name, "stats"), "state") not in ("disabled", b"disabled")]
                    moved = callbacks.fan_out(self.client, enabled, consumer="leader")
            except Exception:  # noqa: BLE001 - a Redis restart: keep trying; entries stay pending in the group
                log.exception("callbacks: fan-out failed; again in a second")
                self.leading.clear()
                self._groups_ready = False
                self._stop.wait(1.0)
            if not moved:
                self._stop.wait(self.interval)
