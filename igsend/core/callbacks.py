"""Status callbacks: the endpoints file, the events, and the per-endpoint queues in Redis that workers send from.

Where an event comes from, durably: every final outcome is written with its entry in the outcome stream
``igsend:outcomes`` in one step (lua/finish.lua, lua/cancel.lua, ``records.Outcomes.dead``), and every inbound
event, read receipts and reactions linked to their job included, with its entry in ``igsend:inbound``. Those
entries are the events. One process at a time (the callbacks lease, :mod:`workers.callbacks`) reads both streams
through the consumer group :data:`GROUP` and, per entry, pushes one copy to the queue of every endpoint that wants
it and acknowledges the entry, in one MULTI (:func:`fan_out`): a process killed in between leaves the entry
pending, and the next lease holder fans it out again, so nothing is lost and nothing doubles.

Per endpoint (``igsend:callbacks:{name}:…``): ``queue`` (a list of events, oldest first), ``sending`` (taken from
the queue, not yet answered; back to the queue when a sender dies), ``waiting`` (a sorted set: for each job with an
event waiting for a retry, when it is due) and ``held:{job}`` (that job's events in order, the first one being
retried: a job's events reach the endpoint in order), ``failed`` (events given up on after the last try, oldest
first, the newest :data:`FAILED_MAX` kept), ``stats`` (a hash: counters, state, last error).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from igsend.core.errors import IgsendError
from igsend.core.store import OUTCOMES_KEY, PREFIX, STATS_KEY
from igsend.core.toml_files import read_toml

SETTING = "IGSEND_CALLBACKS_FILE"
#: The consumer group that reads igsend:outcomes and igsend:inbound for the callbacks.
GROUP = "igsend-callbacks"
INBOUND_STREAM = f"{PREFIX}inbound"
MESSAGE_EVENTS = ("message.delivered", "message.dead", "message.unknown", "message.cancelled", "message.read",
                  "message.reaction")
INBOUND_EVENTS = ("inbound.message", "inbound.postback", "inbound.comment", "inbound.reaction")
EVENTS = (*MESSAGE_EVENTS, *INBOUND_EVENTS, "test")
#: Seconds after each failed try before the next (Standard Webhooks' schedule): the first try at once, the last
#: about 3 days and 3 hours after the event.
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
#: Events kept per endpoint after their last try, for an operator to replay.
FAILED_MAX = 10_000
#: Seconds one try may take (connecting, sending and the answer together).
TIMEOUT = 15.0
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUS_EVENTS = {"delivered": "message.delivered", "dead": "message.dead", "unknown": "message.unknown",
                  "cancelled": "message.cancelled"}
_INBOUND_EVENTS = {"message": "inbound.message", "postback": "inbound.postback", "comment": "inbound.comment",
                   "live_comment": "inbound.comment", "reaction": "inbound.reaction"}


class CallbacksFileError(IgsendError):
    """The callbacks file cannot be used: the text names the file, the endpoint, the field and the rule."""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the callbacks file. The secret never appears in its repr."""

    name: str
    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...] = MESSAGE_EVENTS
    accounts: tuple[str, ...] = ()  # () = every account
    include_text: bool = False
    allow_http: bool = False
    allow_private: bool = False

    def wants(self, event_type: str, account: str) -> bool:
        return event_type in self.events and (not self.accounts or account in self.accounts)


class _EndpointSchema(Schema):
    url = fields.String(required=True)
    secret = fields.String()
    secret_env = fields.String()
    secret_file = fields.String()
    events = fields.List(fields.String(validate=validate.OneOf(EVENTS)), validate=validate.Length(min=1))
    accounts = fields.List(fields.String(validate=validate.Length(min=1)))
    include_text = fields.Boolean()
    allow_http = fields.Boolean()
    allow_private = fields.Boolean()

    @validates_schema
    def _one_secret(self, data: dict[str, Any], **_: Any) -> None:
        given = [name for name in ("secret", "secret_env", "secret_file") if name in data]
        if len(given) != 1:
            raise ValidationError(f"give exactly one of secret, secret_env, secret_file (got {len(given)})",
                                  "secret")
        url = urlsplit(data["url"])
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ValidationError("must be an https:// URL", "url")
        if url.scheme == "http" and not data.get("allow_http"):
            raise ValidationError("must be an https:// URL (plain http:// only with allow_http = true)", "url")


def load(path: str | None = None, *, environ: Mapping[str, str] | None = None) -> dict[str, Endpoint]:
    """The endpoints of the callbacks file (``IGSEND_CALLBACKS_FILE``; none when it is not set)."""
    environ = os.environ if environ is None else environ
    path = path if path is not None else environ.get(SETTING, "")
    if not path:
        return {}
    document = read_toml(path, setting=SETTING, error=CallbacksFileError)
    unknown = sorted(set(document) - {"endpoints"})
    if unknown:
        raise CallbacksFileError(f"{SETTING}: {path}: unknown table {unknown[0]!r} (expected [endpoints.NAME])")
    tables = document.get("endpoints", {})
    if not isinstance(tables, dict):
        raise CallbacksFileError(f"{SETTING}: {path}: endpoints must be tables ([endpoints.NAME])")
    endpoints = {}
    for name, table in tables.items():
        where = f"{SETTING}: {path}: endpoints.{name}"
        if not _NAME.match(name):
            raise CallbacksFileError(f"{where}: a name is 1-64 letters, digits, '-' or '_'")
        if not isinstance(table, dict):
            raise CallbacksFileError(f"{where}: must be a table")
        try:
            data = _EndpointSchema().load(table)
        except ValidationError as exc:
            field_name, problems = next(iter(cast(dict[str, Any], exc.normalized_messages()).items()))
            problem = problems[0] if isinstance(problems, list) else next(iter(problems.values()))[0]
            raise CallbacksFileError(f"{where}.{field_name}: {str(problem).rstrip('.')}") from None
        endpoints[name] = Endpoint(
            name=name, url=data["url"], secret=_secret(data, where, environ),
            events=tuple(data.get("events", MESSAGE_EVENTS)), accounts=tuple(data.get("accounts", ())),
            include_text=data.get("include_text", False), allow_http=data.get("allow_http", False),
            allow_private=data.get("allow_private", False))
    return endpoints


def _secret(data: dict[str, Any], where: str, environ: Mapping[str, str]) -> str:
    if "secret" in data:
        secret = str(data["secret"])
    elif "secret_env" in data:
        secret = environ.get(data["secret_env"], "")
        if not secret:
            raise CallbacksFileError(f"{where}.secret_env: the variable {data['secret_env']} is not set")
    else:
        try:
            with open(data["secret_file"], encoding="utf-8") as handle:
                secret = handle.read().strip()
        except OSError as exc:
            raise CallbacksFileError(f"{where}.secret_file: cannot read {data['secret_file']}: {exc.strerror}") \
                from None
    if not secret.startswith("whsec_") or len(secret) < 6 + 24:
        # the value itself is never repeated: it is a secret
        raise CallbacksFileError(f"{where}: the secret must be 'whsec_' followed by a base64 key of at least 18 "
                                 f"bytes (Standard Webhooks)")
    return secret


# --- keys -------------------------------------------------------------------------------------------------------

def key(endpoint: str, part: str) -> str:
    """``igsend:callbacks:{endpoint}:{part}`` (queue, sending, waiting, held:JOB, failed, stats)."""
    return f"{PREFIX}callbacks:{endpoint}:{part}"


def held_key(endpoint: str, job: str) -> str:
    return key(endpoint, f"held:{job}")


# --- events -----------------------------------------------------------------------------------------------------

def event_of_outcome(entry_id: str, fields_: Mapping[str, str]) -> dict[str, Any] | None:
    """The event an outcome-stream entry stands for, or None (a status no callback reports)."""
    event_type = _STATUS_EVENTS.get(fields_.get("status", ""))
    if event_type is None:
        return None
    return {"webhook_id": f"msg_o{entry_id}", "type": event_type, "job": fields_.get("id", ""),
            "account": fields_.get("account", ""), "at": _float(fields_.get("at")) or time.time()}


def event_of_inbound(entry_id: str, fields_: Mapping[str, str]) -> dict[str, Any] | None:
    """The event an inbound-stream entry stands for, or None (an echo, a deletion, a type no callback reports).
    A read receipt or a reaction linked to the job that sent the message is a ``message.*`` event of that job."""
    kind, job = fields_.get("type", ""), fields_.get("job_id", "")
    if kind == "read":
        event_type = "message.read" if job else None
    elif kind == "reaction" and job:
        event_type = "message.reaction"
    elif kind == "message" and (fields_.get("is_echo") == "1" or fields_.get("is_deleted") == "1"):
        event_type = None
    else:
        event_type = _INBOUND_EVENTS.get(kind)
    if event_type is None:
        return None
    event: dict[str, Any] = {"webhook_id": f"msg_i{entry_id}", "type": event_type, "job": job,
                             "account": fields_.get("account", ""),
                             "at": _float(fields_.get("timestamp")) or time.time()}
    if event_type.startswith("inbound.") or event_type == "message.reaction":
        event["inbound"] = {name: value for name, value in fields_.items() if name != "raw"}
    return event


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def make_test_event() -> dict[str, Any]:
    """A ``test`` event for ``igsend callbacks test``: a fresh ``webhook-id``, no job, now."""
    return {"webhook_id": f"msg_test_{uuid.uuid4().hex}", "type": "test", "job": "", "account": "",
            "at": time.time()}


def setting_hint() -> str:
    """How to configure callbacks, in one line (what the CLI and the console say when none are)."""
    return (f"no callback endpoints: set {SETTING} to a TOML file of [endpoints.NAME] tables (url, secret_env, "
            "events, accounts; see the Status callbacks page of the docs)")


# --- fan-out ----------------------------------------------------------------------------------------------------

def ensure_groups(client: redis.Redis) -> None:
    """The consumer group on both streams, created at their end (events from now on) when missing."""
    for stream in (OUTCOMES_KEY, INBOUND_STREAM):
        try:
            client.xgroup_create(stream, GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def fan_out(client: redis.Redis, endpoints: Iterable[Endpoint], *, consumer: str, count: int = 500) -> int:
    """One pass over both streams: each new (or left pending) entry is copied to the queue of every endpoint that
    wants it and acknowledged, atomically. The outcome stream first and until it is drained, so a job's outcome
    is queued before the read receipt of the message it delivered. Returns how many entries were read."""
    endpoints = list(endpoints)
    total = 0
    for stream, make in ((OUTCOMES_KEY, event_of_outcome), (INBOUND_STREAM, event_of_inbound)):
        for start in ("0", ">"):  # first what this consumer left pending (a previous holder's crash), then new
            while True:
                reply = cast(list[Any], client.xreadgroup(GROUP, consumer, {stream: start}, count=count))
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                pipe = client.pipeline(transaction=True)
                for entry_id, fields_ in entries:
                    if not fields_:  # trimmed by the stream's cap before it was fanned out: counted, not lost silently
                        pipe.hincrby(STATS_KEY, "callback_events_trimmed_total", 1)
                        pipe.xack(stream, GROUP, entry_id)
                        continue
                    event = make(_text(entry_id), {_text(k): _text(v) for k, v in fields_.items()})
                    for endpoint in endpoints:
                        if event is not None and endpoint.wants(event["type"], event["account"]):
                            pipe.rpush(key(endpoint.name, "queue"), json.dumps(event))
                    pipe.xack(stream, GROUP, entry_id)
                pipe.execute()
                total += len(entries)
                if start == "0" or len(entries) < count:
                    break
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- what operators read ----------------------------------------------------------------------------------------

def state(client: redis.Redis, endpoint: str) -> dict[str, Any]:
    """An endpoint's state: ``enabled``/``disabled``, its counters, last error, and how many events wait."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(key(endpoint, "stats"))
    pipe.llen(key(endpoint, "queue"))
    pipe.llen(key(endpoint, "sending"))
    pipe.zcard(key(endpoint, "waiting"))
    pipe.llen(key(endpoint, "failed"))
    pipe.lindex(key(endpoint, "queue"), 0)
    stats, queued, sending, retrying, failed, oldest = pipe.execute()
    stats = {_text(k): _text(v) for k, v in cast(dict[Any, Any], stats).items()}
    oldest_at = json.loads(oldest)["at"] if oldest else None
    return {"name": endpoint, "state": stats.get("state", "enabled"), "disabled_reason": stats.get("disabled"),
            "sent": int(stats.get("sent", 0)), "failed_total": int(stats.get("failed", 0)),
            "retries": int(stats.get("retries", 0)), "last_error": stats.get("last_error"),
            "last_error_at": _float(stats.get("last_error_at")), "last_sent_at": _float(stats.get("last_sent_at")),
            "queued": int(queued), "sending": int(sending), "jobs_retrying": int(retrying), "failed": int(failed),
            "lag_seconds": max(0.0, time.time() - float(oldest_at)) if oldest_at else 0.0}


def failed_events(client: redis.Redis, endpoint: str, limit: int = 100) -> list[dict[str, Any]]:
    """The events given up on, newest first: each with its type, job, tries and last error."""
    raws = cast(list[str], client.lrange(key(endpoint, "failed"), -limit, -1))
    return [json.loads(raw) for raw in reversed(raws)]


# KEYS: failed, queue, stats. Every failed event back to the queue, oldest first, with fresh tries; the endpoint
# enabled again. Returns how many.
_REPLAY = """
local events = redis.call('LRANGE', KEYS[1], 0, -1)
for _, raw in ipairs(events) do
  local event = cjson.decode(raw)
  event['tries'] = nil
  event['error'] = nil
  event['first_try_at'] = nil
  redis.call('RPUSH', KEYS[2], cjson.encode(event))
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'state', 'enabled')
redis.call('HDEL', KEYS[3], 'disabled')
return #events
"""


def replay(client: redis.Redis, endpoint: str) -> int:
    """The endpoint's failed events go back to its queue (oldest first, with fresh tries), and a disabled
    endpoint is enabled again. Returns how many events were queued."""
    return int(client.eval(_REPLAY, 3, key(endpoint, "failed"), key(endpoint, "queue"), key(endpoint, "stats")))
