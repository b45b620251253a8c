"""Meta's webhook deliveries, from the inbox to ``igsend:inbound``: normalised, recorded once, recovered when a
process died under them (store first, process after), on a Redis database no worker consumes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from igsend.core import inbound

SHOP_ID = "17841400000000077"  # the IG account id of igsend's account "shop"
QUIET_DB = 6  # in-process tests of the inbox: no API process consumes it


@pytest.fixture
def quiet_url(redis_url: str) -> Iterator[str]:
    """A database of its own (no API process drains its inbox), with the workers' registry naming "shop"."""
    from igsend.core.presence import Heartbeat, forget

    url = redis_url.rsplit("/", 1)[0] + f"/{QUIET_DB}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    Heartbeat("webhook-test-worker", [{"name": "shop", "id": SHOP_ID, "login": "instagram"}], client).beat()
    forget()
    yield url
    client.flushdb()


def events(db: redis_lib.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in db.xrange(inbound.INBOUND_KEY)]


def item(sender: str, recipient: str, ms: int, **kind: Any) -> dict[str, Any]:
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": ms, **kind}


def batch(account_id: str, *items: dict[str, Any], changes: list[dict[str, Any]] | None = None,
          time_ms: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": account_id, "time": time_ms or 1_760_000_000_000}
    if items:
        entry["messaging"] = list(items)
    if changes:
        entry["changes"] = changes
    return {"object": "instagram", "entry": [entry]}


def test_a_delivery_left_pending_by_a_dead_process_is_processed_later(quiet_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from producers import webhook_inbox

    raw, db = redis_lib.Redis.from_url(quiet_url), redis_lib.Redis.from_url(quiet_url, decode_responses=True)
    body = json.dumps(batch(SHOP_ID, item("P6", SHOP_ID, 1_760_000_600_000,
                                          message={"mid": "m-orphan", "text": "lost?"}))).encode()
    webhook_inbox.store(raw, body)
    processor = webhook_inbox.Inbox(raw)
    processor._ensure_group()
    # a process took it and died before processing it: pending, never acknowledged
    taken = raw.xreadgroup(webhook_inbox.GROUP, "dead-process", {inbound.INBOX_KEY: ">"}, count=10)
    assert len(taken[0][1]) == 1
    assert processor.drain() == 0  # not stale yet: another process may still be on it
    monkeypatch.setattr(webhook_inbox, "STALE_MS", 0)
    assert processor.drain() == 1
    assert [e["mid"] for e in events(db)] == ["m-orphan"]
    assert inbound.last_user_message(db, "shop", "P6") == 1_760_000_600
    assert raw.xlen(inbound.INBOX_KEY) == 0 and raw.xpending(inbound.INBOX_KEY, webhook_inbox.GROUP)["pending"] == 0
    # processing it again (the process died after recording, before acknowledging) repeats nothing
    webhook_inbox.store(raw, body)
    assert processor.drain() == 1
    assert [e["mid"] for e in events(db)] == ["m-orphan"]


def test_unreadable_and_unknown_deliveries_are_kept_not_dropped() -> None:
    from producers.webhook_inbox import normalise

    [unreadable] = normalise(b"\xff not json", 1.0, {})
    assert unreadable.fields["type"] == "unreadable" and unreadable.fields["raw"].endswith("not json")
    odd = normalise(json.dumps({"object": "instagram", "entry": [{"id": SHOP_ID, "time": 5, "changes": [
        {"field": "mentions", "value": {"media_id": "m1"}}], "messaging": [
        item("P1", SHOP_ID, 5000, optin={"ref": "x"})]}]}).encode(), 9.0, {SHOP_ID: ("shop",)})
    assert [(e.fields["type"], e.fields["account"], e.note) for e in odd] == [("optin", "shop", None),
                                                                             ("mentions", "shop", None)]
    # the App Dashboard's "Test" button sends a messaging item as a change
    [test] = normalise(json.dumps({"object": "instagram", "entry": [{"id": "0", "time": 1, "changes": [
        {"field": "messages", "value": item("12334", "23245", 1527459824000, message={"mid": "random_mid",
                                                                                       "text": "random_text"})}]}]}
                                  ).encode(), 9.0, {})
    assert (test.fields["type"], test.fields["mid"], test.fields["text"], test.fields["account"]) == (
        "message", "random_mid", "random_text", "")
