"""Meta's webhook deliveries, from the inbox to ``igsend:inbound``: store first, process after.

The HTTP handler (:mod:`producers.webhooks`) only verifies a POST's signature, adds its raw body to the stream
``igsend:webhook-inbox`` (:func:`store`) and answers 200. A daemon thread in each API process (:class:`Inbox`)
reads that stream through the consumer group :data:`GROUP`: it normalises every event of a delivery
(:func:`normalise`), records when the person wrote and when a comment was made (:mod:`igsend.core.inbound`),
appends each event once to ``igsend:inbound``, then acknowledges and deletes the delivery. A delivery taken by a
process that died, or left half done by a Redis error, stays pending in the group; every pass (at once after each
POST, else every :data:`POLL_SECONDS`) first claims deliveries pending longer than :data:`STALE_MS` (XAUTOCLAIM)
and processes them again, which repeats nothing: notes keep the later time, and an event whose id was seen is
dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.exceptions import RedisError, ResponseError

from igsend.core import inbound, presence, records, sent
from igsend.core.records import check_replicas, wait_for_replicas
from igsend.core.settings import get_settings

log = logging.getLogger("igsend.webhooks")

#: The consumer group of the API processes on the inbox.
GROUP = "igsend-api"
#: A delivery pending this long (its process died, or Redis failed mid-way) is claimed by the next pass.
STALE_MS = 30_000
#: Seconds between passes when no POST wakes the thread.
POLL_SECONDS = 5.0
#: Deliveries read per round trip.
BATCH = 20
#: A consumer (an API process that went away) with nothing pending, idle this long, is removed from the group.
FORGET_CONSUMER_MS = 3600 * 1000

#: The fields of every event in ``igsend:inbound``, in this order, empty when they do not apply.
FIELDS = ("type", "event_id", "account", "account_id", "sender", "recipient", "timestamp", "mid", "text", "payload",
          "reply_to", "attachments", "referral", "reaction", "emoji", "action", "is_echo", "is_deleted",
          "comment_id", "media_id", "username", "job_id", "received_at", "raw")
#: Messaging items that open the 24-hour window when the person (not the business) sends them.
OPENS_WINDOW = {"message", "postback", "referral"}
#: ``changes[].field`` values that are comments (their time is remembered for private replies).
COMMENT_FIELDS = {"comments": "comment", "live_comments": "live_comment"}
#: Messaging webhook fields: the App Dashboard's "Test" button sends such an item as ``changes[].value``.
MESSAGING_FIELDS = {"messages", "messaging_postbacks", "messaging_seen", "message_reactions", "messaging_referral",
                    "message_edit", "messaging_optins", "messaging_handover"}
#: The payload keys of a shared post (``ig_post`` attachment), present in every one igsend records.
POST_SHARE_KEYS = ("ig_post_media_id", "title", "url")


@dataclass(frozen=True)
class Event:
    """One normalised event: its stream fields, and what it says for the window or a private reply."""

    fields: dict[str, str]
    #: ("wrote", person, unix seconds) or ("comment", comment id, unix seconds), for each igsend account it is of
    note: tuple[str, str, float] | None = None
    accounts: tuple[str, ...] = ()

    @property
    def event_id(self) -> str:
        return self.fields["event_id"]


# --- normalising ------------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return _json(value)
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _seconds(value: Any) -> float | None:
    """Meta's times as Unix seconds: messaging timestamps are milliseconds, ``entry.time`` of changes seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if number != number or number <= 0:  # NaN, or no time at all
        return None
    return number / 1000 if number > 100_000_000_000 else number


def _digest(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def post_shares(attachments: Any) -> Any:
    """A message's ``attachments`` with every shared post in one shape: ``{"type": "ig_post", "payload":
    {"ig_post_media_id", "title", "url", ...}}``, each of :data:`POST_SHARE_KEYS` present (null when Meta left it
    out), any other payload key kept as sent. Meta sends post shares as ``ig_post`` (since 2025-11-03; the legacy
    ``share`` attachment beside it was dropped on 2026-04-27, Instagram changelog): a ``share`` that still arrives is
    recorded as ``ig_post`` too, and left out when the same message holds the ``ig_post`` of the same post. Other
    attachments, a payload that is not an object, and anything not a list are kept as given."""
    if not isinstance(attachments, list):
        return attachments
    posts = {_post_key(_dict(attachment.get("payload"))) for attachment in attachments
             if isinstance(attachment, dict) and attachment.get("type") == "ig_post"} - {""}
    shaped: list[Any] = []
    for attachment in attachments:
        kind = attachment.get("type") if isinstance(attachment, dict) else None
        if kind not in ("ig_post", "share"):
            shaped.append(attachment)
            continue
        payload = attachment.get("payload")
        if payload is not None and not isinstance(payload, dict):
            shaped.append({**attachment, "type": "ig_post"})
        elif kind != "share" or _post_key(payload or {}) not in posts:  # else the ig_post beside it says the same
            shaped.append({**attachment, "type": "ig_post",
                           "payload": {**dict.fromkeys(POST_SHARE_KEYS), **(payload or {})}})
    return shaped


def _post_key(payload: dict[str, Any]) -> str:
    """What names a shared post: its media id, else its URL ("" when neither: such shares are never merged)."""
    media_id, url = payload.get("ig_post_media_id"), payload.get("url")
    return f"id:{media_id}" if media_id else f"url:{url}" if url else ""


def _messaging(item: dict[str, Any], entry_id: str, at: float) -> tuple[dict[str, str], str | None]:
    """A ``messaging[]`` item's fields, and the person whose writing it is (None when it opens no window)."""
    sender = _text(_dict(item.get("sender")).get("id"))
    kind = next((key for key in item if key not in ("sender", "recipient", "timestamp")), "unknown")
    body = _dict(item.get(kind))
    when = _seconds(item.get("timestamp")) or at
    fields = {"type": kind, "sender": sender, "recipient": _text(_dict(item.get("recipient")).get("id")),
              "timestamp": f"{when:.3f}"}
    mid = _text(body.get("mid"))
    event_id = None
    if kind == "message":
        echo, deleted = bool(body.get("is_echo")), bool(body.get("is_deleted"))
        quick_reply = _dict(body.get("quick_reply"))
        fields.update(mid=mid, text=_text(body.get("text")), payload=_text(quick_reply.get("payload")),
                      reply_to=_text(body.get("reply_to")), attachments=_text(post_shares(body.get("attachments"))),
                      referral=_text(body.get("referral")), is_echo=_text(echo), is_deleted=_text(deleted))
        if mid:
            event_id = f"{'message_deleted' if deleted else 'echo' if echo else 'message'}:{mid}"
    elif kind == "postback":
        fields.update(mid=mid, text=_text(body.get("title")), payload=_text(body.get("payload")),
                      referral=_text(body.get("referral")))
        event_id = f"postback:{mid}" if mid else None
    elif kind == "reaction":
        fields.update(mid=mid, reaction=_text(body.get("reaction")), emoji=_text(body.get("emoji")),
                      action=_text(body.get("action")))
    elif kind == "read":
        fields.update(mid=mid)
    elif kind == "message_edit":
        fields.update(mid=mid, text=_text(body.get("text")))
        event_id = f"message_edit:{mid}:{_text(body.get('num_edit'))}" if mid else None
    elif kind == "referral":
        fields.update(referral=_text(body), payload=_text(body.get("ref")))
    fields["event_id"] = event_id or _digest(entry_id, item)
    opens = kind in OPENS_WINDOW and fields.get("is_echo") != "1" and fields.get("is_deleted") != "1"
    return fields, (sender if opens and sender and sender != entry_id else None)


def _comment(kind: str, value: dict[str, Any], entry_id: str, at: float) -> dict[str, str]:
    author = _dict(value.get("from"))
    comment_id = _text(value.get("id"))
    return {"type": kind, "event_id": f"{kind}:{comment_id}" if comment_id else _digest(entry_id, kind, value),
            "sender": _text(author.get("id")), "username": _text(author.get("username")),
            "timestamp": f"{at:.3f}", "text": _text(value.get("text")), "comment_id": comment_id,
            "media_id": _text(_dict(value.get("media")).get("id"))}


def delivery_document(body: bytes) -> dict[str, Any] | None:
    """A webhook delivery as a JSON object whose ``entry`` is a list; None when it is not that."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("entry"), list):
        return document
    return None


def normalise(body: bytes, received_at: float, accounts: Mapping[str, tuple[str, ...]]) -> list[Event]:
    """Every event of one webhook delivery, in order. ``accounts`` maps an IG account id to igsend's account
    names. A body that is not a JSON object of entries is one event of type ``unreadable``; an item that is
    not an object one of type ``unknown``: nothing Meta sent is dropped."""
    base = dict.fromkeys(FIELDS, "")
    base["received_at"] = f"{received_at:.3f}"
    document = delivery_document(body)
    if document is None:
        text = body.decode("utf-8", "replace")
        return [Event({**base, "type": "unreadable", "event_id": _digest(text), "raw": text})]
    events: list[Event] = []
    for entry in document["entry"]:
        if not isinstance(entry, dict):
            events.append(Event({**base, "type": "unknown", "event_id": _digest(entry), "raw": _json(entry)}))
            continue
        entry_id = _text(entry.get("id"))
        names = accounts.get(entry_id, ())
        entry_time = _seconds(entry.get("time")) or received_at
        common = {**base, "account": names[0] if names else "", "account_id": entry_id}
        items: list[tuple[str | None, Any]] = [(None, item) for item in _list(entry.get("messaging"))]
        items += [(_text(_dict(change).get("field")), _dict(change).get("value"))
                  for change in _list(entry.get("changes"))]
        for field, item in items:
            fields: dict[str, str]
            note: tuple[str, str, float] | None = None
            if not isinstance(item, dict):
                fields = {"type": field or "unknown", "event_id": _digest(entry_id, field, item)}
            elif field is None or (field in MESSAGING_FIELDS and "sender" in item):
                fields, person = _messaging(item, entry_id, entry_time)
                if person:
                    note = ("wrote", person, float(fields["timestamp"]))
            elif field in COMMENT_FIELDS:
                fields = _comment(COMMENT_FIELDS[field], item, entry_id, entry_time)
                if fields["comment_id"]:
                    note = ("comment", fields["comment_id"], entry_time)
            else:
                fields = {"type": field, "event_id": _digest(entry_id, field, item), "text": _text(item.get("text")),
                          "timestamp": f"{entry_time:.3f}"}
            fields = {**common, **fields, "raw": _json(item)}
            events.append(Event(fields, note if names else None, names))
    return events


def accounts_by_id(client: redis.Redis) -> dict[str, tuple[str, ...]]:
    """IG account id -> igsend account names, from what the workers announced (every account ever served)."""
    current = presence.current(client)
    found: dict[str, set[str]] = {}
    for name, account in {**current.known, **current.served()}.items():
        # a Facebook-Login account is declared by its Page id; its webhooks name the Instagram account
        # (instagram_id in the accounts file)
        for key in ("id", "instagram_id"):
            account_id = _text(_dict(account).get(key))
            if account_id and account_id != "me":
                found.setdefault(account_id, set()).add(name)
    return {account_id: tuple(sorted(names)) for account_id, names in found.items()}


#: Events about a message the business sent: linked to the job that sent it (``job_id``).
ABOUT_A_SENT_MESSAGE = {"read", "reaction"}


def _link_to_job(client: redis.Redis, pipe: redis.client.Pipeline, event: Event) -> None:
    """A read receipt or a reaction names Meta's id of a message: when igsend sent it, and its record still
    lasts, the event gets the job's id, and a read receipt sets the job's ``read_at``."""
    mid = event.fields.get("mid")
    if event.fields.get("type") not in ABOUT_A_SENT_MESSAGE or not mid:
        return
    ttl = get_settings().delivered_ttl
    job_id = next((found for account in event.accounts
                   if (found := sent.job_of(client, account, mid, delivered_ttl=ttl))), None)
    if job_id is None:
        return
    event.fields["job_id"] = job_id
    if event.fields["type"] == "read":
        records.mark_read(client, job_id, float(event.fields.get("timestamp") or time.time()), pipe=pipe)


# --- the inbox --------------------------------------------------------------------------------------------------

def store(client: redis.Redis, body: bytes, *, replica_acks: int = 0, replica_timeout: float = 1.0) -> str:
    """Keep a verified delivery's raw body (and when it came) until it is processed: its inbox entry id.
    Raises RedisError (or NotReplicated) when it could not be kept: the caller answers 503 and Meta retries."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(inbound.INBOX_KEY, {"body": body, "received_at": f"{time.time():.3f}"})
    if replica_acks:
        wait_for_replicas(pipe, replica_acks, replica_timeout)
    replies = pipe.execute()
    if replica_acks:
        check_replicas(replies[-1], replica_acks, replica_timeout, "the webhook delivery")
    entry_id = replies[0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def _field(fields: Mapping[Any, Any], name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value if isinstance(value, bytes) else str(value).encode()


def process(client: redis.Redis, entries: list[tuple[Any, Mapping[Any, Any]]]) -> int:
    """Process inbox entries (id, fields) read through the group: record each event once, then acknowledge and
    delete the entry. Returns how many events were read (duplicates included)."""
    if not entries:
        return 0
    accounts = accounts_by_id(client)
    pipe = client.pipeline(transaction=False)
    count = 0
    for entry_id, fields in entries:
        try:
            received_at = float(_field(fields, "received_at") or time.time())
        except ValueError:
            received_at = time.time()
        for event in normalise(_field(fields, "body"), received_at, accounts):
            count += 1
            _link_to_job(client, pipe, event)
            if event.note:
                what, subject, at = event.note
                for account in event.accounts:
                    if what == "wrote":
                        inbound.note_user_message(pipe, account, subject, at)
                    else:
                        inbound.note_comment(pipe, account, subject, at)
            inbound.append_event(pipe, event.event_id, event.fields)
        pipe.xack(inbound.INBOX_KEY, GROUP, entry_id)
        pipe.xdel(inbound.INBOX_KEY, entry_id)
    pipe.execute()
    return count


class Inbox:
    """The processing thread of one API process (one consumer of :data:`GROUP`)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._group_ready = False

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running (also after a fork: threads do not follow)."""
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.consumer = f"{socket.gethostname()}-{self._pid}"
            self._group_ready = False
            self._stop.clear()
            self._wake.set()  # a first pass at once: what an earlier process left is claimed now
            self._thread = threading.Thread(target=self._run, name="igsend-webhook-inbox", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.drain()
            except RedisError as exc:
                self._group_ready = self._group_ready and "NOGROUP" not in str(exc)
                log.warning("webhook inbox: %s: %s (the deliveries stay pending and are processed later)",
                            type(exc).__name__, exc)
            except Exception:  # noqa: BLE001 - the thread must outlive a bug; the entries stay pending
                log.exception("webhook inbox: processing failed (the deliveries stay pending)")

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # from the start of the stream: deliveries stored before the group existed are processed too
            self.client.xgroup_create(inbound.INBOX_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def drain(self) -> int:
        """One pass: claim stale deliveries, then read new ones until none is left. Returns events processed."""
        self._ensure_group()
        total = 0
        start = "0-0"
        while True:  # deliveries pending too long: their process died, or Redis failed under them
            reply = self.client.xautoclaim(inbound.INBOX_KEY, GROUP, self.consumer, STALE_MS, start, count=BATCH)
            start, claimed = reply[0], [entry for entry in reply[1] if entry[1] is not None]
            total += process(self.client, claimed)
            if start in (b"0-0", "0-0"):
                break
        while True:
            reply = cast(list[Any], self.client.xreadgroup(GROUP, self.consumer, {inbound.INBOX_KEY: ">"},
                                                           count=BATCH))  # RESP2: [[stream, entries]]
            entries = [entry for _, batch in reply or [] for entry in batch]
            if not entries:
                break
            total += process(self.client, entries)
        self._forget_consumers()
        return total

    def _forget_consumers(self) -> None:
        for consumer in self.client.xinfo_consumers(inbound.INBOX_KEY, GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else str(consumer["name"])
            if name != self.consumer and not consumer["pending"] and consumer["idle"] > FORGET_CONSUMER_MS:
                self.client.xgroup_delconsumer(inbound.INBOX_KEY, GROUP, name)
