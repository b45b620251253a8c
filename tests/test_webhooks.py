"""Meta's webhooks, end to end: a real ``igsend api`` process on a Redis database of its own (db 5: no worker
consumes it), signed like Meta signs, read back from ``igsend:inbound`` and the window keys; and the inbox's
recovery (store first, process after) against the same Redis in-process."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests

from igsend.core import inbound
from tests.conftest import reset_client_caches, wait_until

KEY = "webhook-test-api-key"
APP_SECRET = "app-secret-of-the-default-app"
OTHER_SECRET = "app-secret-of-the-shop-app"
VERIFY_TOKEN = "verify-me-0123456789"
SHOP_ID = "17841400000000077"  # the IG account id of igsend's account "shop"
DEFAULT_ID = "17841400000000078"
STRANGER_ID = "17841400000000099"  # an account igsend does not serve
DB = 5  # the API process's
QUIET_DB = 6  # in-process tests of the inbox: no API process consumes it


@pytest.fixture(scope="module")
def db_url(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def db(db_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(db_url, decode_responses=True)
    _clear(client)
    yield client
    _clear(client)


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


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings read again after the test changed the environment (monkeypatch restores it first)."""
    yield
    reset_client_caches()


def _clear(client: redis_lib.Redis) -> None:
    """Everything but the workers' registry (what the API maps account ids with) and the inbox's group."""
    keys = [k for k in client.scan_iter("igsend:*") if not k.startswith("igsend:workers")
            and k != inbound.INBOX_KEY]
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def api(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``igsend api`` with the app secret, an accounts file naming a second app's secret (and a token the API
    never reads), and the verify token; the workers' registry says which igsend account each IG id is."""
    from igsend.core.presence import Heartbeat
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    Heartbeat("webhook-test-worker", [{"name": "shop", "id": SHOP_ID, "login": "instagram"},
                                      {"name": "default", "id": DEFAULT_ID, "login": "instagram"}],
              redis_lib.Redis.from_url(db_url, decode_responses=True)).beat()
    accounts = tmp_path_factory.mktemp("webhook-accounts") / "accounts.toml"
    accounts.write_text(f'[accounts.shop]\nid = "{SHOP_ID}"\ntoken_env = "NOT_SET_ANYWHERE"\n'
                        'app_secret_env = "SHOP_APP_SECRET"\n')
    port = free_port()
    service = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                            env={"IGSEND_REDIS_URL": db_url, "IGSEND_API_KEYS": KEY, "IGSEND_APP_SECRET": APP_SECRET,
                                 "IGSEND_ACCOUNTS_FILE": str(accounts), "SHOP_APP_SECRET": OTHER_SECRET,
                                 "IGSEND_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN},
                            ready_url=f"http://127.0.0.1:{port}/openapi.json",
                            log_path=tmp_path_factory.mktemp("logs") / "webhook-api.log")
    yield f"http://127.0.0.1:{port}/webhooks/instagram"
    service.stop()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, document: Any, *, secret: str = APP_SECRET, body: bytes | None = None,
         signature: str | None = None) -> requests.Response:
    raw = body if body is not None else json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    headers["X-Hub-Signature-256"] = signature if signature is not None else sign(raw, secret)
    return requests.post(url, data=raw, headers=headers, timeout=10)


def events(db: redis_lib.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in db.xrange(inbound.INBOUND_KEY)]


def last_stored(db: redis_lib.Redis) -> str | None:
    """The id of the last delivery the inbox ever stored (None: it never held one)."""
    try:
        return str(db.xinfo_stream(inbound.INBOX_KEY)["last-generated-id"])
    except redis_lib.ResponseError:  # no such key
        return None


def settled(db: redis_lib.Redis, count: int) -> list[dict[str, str]]:
    """The stream once it holds ``count`` events and the inbox is empty (every delivery processed)."""
    wait_until(lambda: len(events(db)) >= count and db.xlen(inbound.INBOX_KEY) == 0, timeout=15)
    return events(db)


def item(sender: str, recipient: str, ms: int, **kind: Any) -> dict[str, Any]:
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": ms, **kind}


def batch(account_id: str, *items: dict[str, Any], changes: list[dict[str, Any]] | None = None,
          time_ms: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": account_id, "time": time_ms or int(time.time() * 1000)}
    if items:
        entry["messaging"] = list(items)
    if changes:
        entry["changes"] = changes
    return {"object": "instagram", "entry": [entry]}


# --- the handshake ----------------------------------------------------------------------------------------------

def test_the_handshake_answers_the_challenge_only_with_the_verify_token(api: str) -> None:
    ok = requests.get(api, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                   "hub.challenge": "1158201444"}, timeout=5)
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["Content-Type"].startswith("text/plain")
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
                   {"hub.mode": "subscribe", "hub.challenge": "1"}, {}):
        refused = requests.get(api, params=params, timeout=5)
        assert refused.status_code == 403 and "1" not in refused.text.split(), params


def test_without_a_verify_token_the_handshake_is_refused(fresh_settings: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from producers.api import create_app

    monkeypatch.delenv("IGSEND_WEBHOOK_VERIFY_TOKEN", raising=False)
    monkeypatch.setenv("IGSEND_ENV_FILE", "/nonexistent/.env")
    reset_client_caches()
    client = create_app(api_keys=["k"]).test_client()
    answer = client.get("/webhooks/instagram?hub.mode=subscribe&hub.verify_token=&hub.challenge=7")
    assert answer.status_code == 403


# --- deliveries -------------------------------------------------------------------------------------------------

def test_a_signed_delivery_lands_in_the_stream_normalised_and_opens_the_window(api: str,
                                                                           db: redis_lib.Redis) -> None:
    t = 1_760_000_000_000
    document = batch(
        SHOP_ID,
        item("P1", SHOP_ID, t, message={"mid": "m-1", "text": "Hi there", "reply_to": {"mid": "m-0"}}),
        item("P1", SHOP_ID, t + 1000, message={"mid": "m-2", "text": "Yes", "quick_reply": {"payload": "YES"}}),
        item("P1", SHOP_ID, t + 2000, message={"mid": "m-3", "attachments": [
            {"type": "image", "payload": {"url": "https://cdn.example.com/a.jpg"}}]}),
        item(SHOP_ID, "P9", t + 3000, message={"mid": "m-echo", "text": "We are open", "is_echo": True}),
        item("P2", SHOP_ID, t + 4000, postback={"mid": "pb-1", "title": "Buy", "payload": "BUY"}),
        item("P3", SHOP_ID, t + 5000, reaction={"mid": "m-echo", "action": "react", "reaction": "love",
                                                "emoji": "\u2764"}),
        item("P3", SHOP_ID, t + 6000, read={"mid": "m-echo"}),
        item("P4", SHOP_ID, t + 7000, referral={"ref": "spring", "source": "ADS", "type": "OPEN_THREAD"}),
        item("P1", SHOP_ID, t + 8000, message_edit={"mid": "m-1", "text": "Hi!", "num_edit": 1}),
        item("P5", SHOP_ID, t + 9000, message={"mid": "m-gone", "is_deleted": True}),
    )
    answer = post(api, document)
    assert answer.status_code == 200
    got = settled(db, 10)
    assert len(got) == 10
    assert [e["type"] for e in got] == ["message", "message", "message", "message", "postback", "reaction", "read",
                                       "referral", "message_edit", "message"]
    first = got[0]
    assert first["account"] == "shop" and first["account_id"] == SHOP_ID
    assert (first["sender"], first["recipient"], first["mid"], first["text"]) == ("P1", SHOP_ID, "m-1", "Hi there")
    assert first["event_id"] == "message:m-1" and float(first["timestamp"]) == t / 1000
    assert json.loads(first["reply_to"]) == {"mid": "m-0"} and first["is_echo"] == "0"
    assert json.loads(first["raw"]) == document["entry"][0]["messaging"][0]
    assert float(first["received_at"]) == pytest.approx(time.time(), abs=30)
    assert set(first) == {"type", "event_id", "account", "account_id", "sender", "recipient", "timestamp", "mid",
                          "text", "payload", "reply_to", "attachments", "referral", "reaction", "emoji", "action",
                          "is_echo", "is_deleted", "comment_id", "media_id", "username", "job_id", "received_at",
                          "raw"}
    assert got[1]["payload"] == "YES"
    assert json.loads(got[2]["attachments"])[0]["payload"]["url"] == "https://cdn.example.com/a.jpg"
    echo = got[3]
    assert (echo["is_echo"], echo["sender"], echo["recipient"], echo["event_id"]) == ("1", SHOP_ID, "P9",
                                                                                    "echo:m-echo")
    assert (got[4]["text"], got[4]["payload"], got[4]["event_id"]) == ("Buy", "BUY", "postback:pb-1")
    assert (got[5]["reaction"], got[5]["emoji"], got[5]["action"], got[5]["mid"]) == ("love", "\u2764", "react",
                                                                                      "m-echo")
    assert got[6]["mid"] == "m-echo" and got[6]["event_id"].startswith("sha256:")
    assert json.loads(got[7]["referral"])["ref"] == "spring" and got[7]["payload"] == "spring"
    assert (got[8]["text"], got[8]["event_id"]) == ("Hi!", "message_edit:m-1:1")
    assert (got[9]["is_deleted"], got[9]["event_id"]) == ("1", "message_deleted:m-gone")
    # the window: messages, quick replies, postbacks and referrals from the person; never an echo, a reaction,
    # a read, an edit or a deletion
    assert inbound.last_user_message(db, "shop", "P1") == (t + 2000) / 1000  # the latest message, not the edit
    assert inbound.last_user_message(db, "shop", "P2") == (t + 4000) / 1000
    assert inbound.last_user_message(db, "shop", "P4") == (t + 7000) / 1000
    for person in ("P9", "P3", "P5", SHOP_ID):
        assert inbound.last_user_message(db, "shop", person) is None, person
    assert 0 < db.ttl(inbound.last_wrote_key("shop", "P1")) <= inbound.REMEMBER_SECONDS
    # processed and gone from the inbox; nothing pending
    assert db.xlen(inbound.INBOX_KEY) == 0
    assert db.xpending(inbound.INBOX_KEY, "igsend-api")["pending"] == 0


POST_URL = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=18139494541428835&signature=abc"
POST_PAYLOAD = {"ig_post_media_id": "18139494541428835", "title": "Build a workspace that attracts talent",
                "url": POST_URL}  # Meta's example (Instagram Platform, "Post shares: new attachment type")


def test_shared_posts_are_recorded_as_ig_post_whether_meta_sends_ig_post_or_the_legacy_share(
        api: str, db: redis_lib.Redis) -> None:
    t = 1_760_000_050_000
    image = {"type": "image", "payload": {"url": "https://cdn.example.com/b.jpg"}}
    document = batch(
        SHOP_ID,
        item("P1", SHOP_ID, t, message={"mid": "m-ig-post", "attachments": [
            {"type": "ig_post", "payload": POST_PAYLOAD}]}),
        item("P1", SHOP_ID, t + 1000, message={"mid": "m-share", "attachments": [
            {"type": "share", "payload": POST_PAYLOAD}]}),
        # the transition: Meta sent both for one post; the other attachment stays where it was
        item("P1", SHOP_ID, t + 2000, message={"mid": "m-both", "text": "look", "attachments": [
            {"type": "share", "payload": POST_PAYLOAD}, image, {"type": "ig_post", "payload": POST_PAYLOAD}]}),
        # an older share: a URL alone
        item("P2", SHOP_ID, t + 3000, message={"mid": "m-old-share", "attachments": [
            {"type": "share", "payload": {"url": POST_URL}}]}),
        item("P3", SHOP_ID, t + 4000, message={"mid": "m-extra", "attachments": [
            {"type": "ig_post", "payload": {**POST_PAYLOAD, "media_product_type": "REELS"}}]}),
    )
    assert post(api, document).status_code == 200
    got = {event["mid"]: event for event in settled(db, 5)}
    assert len(got) == 5
    shared = {"type": "ig_post", "payload": POST_PAYLOAD}
    assert json.loads(got["m-ig-post"]["attachments"]) == [shared]
    assert json.loads(got["m-share"]["attachments"]) == [shared]
    assert json.loads(got["m-both"]["attachments"]) == [image, shared]
    assert got["m-both"]["text"] == "look"
    assert json.loads(got["m-old-share"]["attachments"]) == [
        {"type": "ig_post", "payload": {"ig_post_media_id": None, "title": None, "url": POST_URL}}]
    assert json.loads(got["m-extra"]["attachments"]) == [
        {"type": "ig_post", "payload": {**POST_PAYLOAD, "media_product_type": "REELS"}}]
    # what Meta sent stays in raw, and a shared post is a message: it opens the window
    assert json.loads(got["m-share"]["raw"])["message"]["attachments"][0]["type"] == "share"
    assert all(event["type"] == "message" and event["event_id"] == f"message:{mid}" for mid, event in got.items())
    assert inbound.last_user_message(db, "shop", "P1") == (t + 2000) / 1000


def test_post_shares_keep_what_is_not_a_post_as_given() -> None:
    from producers.webhook_inbox import post_shares

    assert post_shares(None) is None
    assert post_shares({"type": "share"}) == {"type": "share"}  # not a list: kept (and recorded) as sent
    assert post_shares(["x", {"type": "image"}]) == ["x", {"type": "image"}]
    assert post_shares([{"type": "share", "payload": "odd"}]) == [{"type": "ig_post", "payload": "odd"}]
    # no media id and no URL: nothing says two of them are one post, so neither is dropped
    assert post_shares([{"type": "share"}, {"type": "ig_post", "payload": {}}]) == [
        {"type": "ig_post", "payload": {"ig_post_media_id": None, "title": None, "url": None}}] * 2
    # another post's share is not the ig_post's pair
    other = {"ig_post_media_id": "17900000000000001", "title": "other", "url": "https://x.example/p"}
    assert post_shares([{"type": "share", "payload": other}, {"type": "ig_post", "payload": POST_PAYLOAD}]) == [
        {"type": "ig_post", "payload": other}, {"type": "ig_post", "payload": POST_PAYLOAD}]


def test_message_edits_are_recorded_and_never_fail_a_delivery(api: str, db: redis_lib.Redis) -> None:
    """Meta documents ``message_edit`` for Messenger only: taken when it comes, each edit once."""
    t = 1_760_000_060_000
    first = item("P1", SHOP_ID, t + 1000, message_edit={"mid": "m-edited", "text": "Hi!", "num_edit": 1})
    document = batch(
        SHOP_ID,
        item("P1", SHOP_ID, t, message={"mid": "m-edited", "text": "Hi"}),
        first,
        item("P1", SHOP_ID, t + 2000, message_edit={"mid": "m-edited", "text": "Hi!!", "num_edit": 2}),
        item("P1", SHOP_ID, t + 3000, message_edit={"mid": "m-no-count", "text": "edited"}),
        item("P1", SHOP_ID, t + 4000, message_edit="not an object"),
    )
    assert post(api, document).status_code == 200
    assert post(api, batch(SHOP_ID, first)).status_code == 200  # Meta's retry of the first edit
    got = settled(db, 5)
    assert [(e["type"], e["mid"], e["text"]) for e in got] == [
        ("message", "m-edited", "Hi"), ("message_edit", "m-edited", "Hi!"), ("message_edit", "m-edited", "Hi!!"),
        ("message_edit", "m-no-count", "edited"), ("message_edit", "", "")]
    assert [e["event_id"] for e in got[1:4]] == ["message_edit:m-edited:1", "message_edit:m-edited:2",
                                                 "message_edit:m-no-count:"]
    assert got[4]["event_id"].startswith("sha256:") and json.loads(got[4]["raw"])["message_edit"] == "not an object"
    assert inbound.last_user_message(db, "shop", "P1") == t / 1000  # an edit opens no window
    assert db.xpending(inbound.INBOX_KEY, "igsend-api")["pending"] == 0


def test_forged_missing_and_reserialised_signatures_are_refused_and_nothing_is_stored(api: str,
                                                                                      db: redis_lib.Redis) -> None:
    document = batch(SHOP_ID, item("P1", SHOP_ID, 1_760_000_000_000, message={"mid": "m-forged", "text": "x"}))
    body = json.dumps(document).encode()
    assert post(api, document, secret="not-the-secret").status_code == 403
    assert post(api, document, signature="sha256=" + "0" * 64).status_code == 403
    assert post(api, document, signature="").status_code == 401
    assert post(api, document, signature="sha1=" + hashlib.sha1(body).hexdigest()).status_code == 401
    assert post(api, document, signature=sign(body)[:-2]).status_code == 401
    stored_before = last_stored(db)
    missing = requests.post(api, data=body, headers={"Content-Type": "application/json"}, timeout=5)
    assert missing.status_code == 401
    # the same JSON, other bytes: Meta signed the bytes, so a body re-serialised by anyone is not Meta's
    other_bytes = json.dumps(document, indent=2, sort_keys=True).encode()
    assert json.loads(other_bytes) == document and other_bytes != body
    assert post(api, document, body=other_bytes, signature=sign(body)).status_code == 403
    # a bearer key is no way in either
    keyed = requests.post(api, data=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert keyed.status_code == 401
    time.sleep(0.5)
    assert last_stored(db) == stored_before  # not stored, even for a moment
    assert events(db) == []
    assert inbound.last_user_message(db, "shop", "P1") is None


def test_the_app_secret_of_an_account_in_the_accounts_file_verifies_too(api: str, db: redis_lib.Redis) -> None:
    document = batch(SHOP_ID, item("P7", SHOP_ID, 1_760_000_100_000, message={"mid": "m-shop-app", "text": "a"}))
    assert post(api, document, secret=OTHER_SECRET).status_code == 200
    assert settled(db, 1)[0]["mid"] == "m-shop-app"


def test_metas_retry_of_a_batch_adds_nothing_twice(api: str, db: redis_lib.Redis) -> None:
    document = batch(SHOP_ID,
                     item("P1", SHOP_ID, 1_760_000_200_000, message={"mid": "m-retried", "text": "once"}),
                     item("P1", SHOP_ID, 1_760_000_201_000, reaction={"mid": "m-x", "action": "react",
                                                                      "reaction": "love"}))
    body = json.dumps(document).encode()
    for _ in range(3):
        assert post(api, document, body=body).status_code == 200
    # a retry may also come re-serialised by Meta: the event ids, not the bytes, decide
    assert post(api, document, body=json.dumps(document, indent=1).encode()).status_code == 200
    wait_until(lambda: db.xlen(inbound.INBOX_KEY) == 0 and len(events(db)) >= 2, timeout=15)
    time.sleep(0.3)
    assert [e["event_id"] for e in events(db)][:1] == ["message:m-retried"]
    assert len(events(db)) == 2


def test_a_comment_is_recorded_with_its_time(api: str, db: redis_lib.Redis) -> None:
    at = 1_760_000_300
    document = {"object": "instagram", "entry": [{"id": SHOP_ID, "time": at, "changes": [
        {"field": "comments", "value": {"id": "c-17", "from": {"id": "P8", "username": "ana"}, "text": "Price?",
                                        "media": {"id": "media-1", "media_product_type": "FEED"}}},
        {"field": "live_comments", "value": {"id": "c-live", "from": {"id": "P8", "username": "ana"},
                                             "text": "wow", "media": {"id": "live-1"}}}]}]}
    assert post(api, document).status_code == 200
    got = settled(db, 2)
    comment = got[0]
    assert (comment["type"], comment["event_id"], comment["account"], comment["comment_id"]) == (
        "comment", "comment:c-17", "shop", "c-17")
    assert (comment["sender"], comment["username"], comment["text"], comment["media_id"]) == (
        "P8", "ana", "Price?", "media-1")
    assert float(comment["timestamp"]) == at
    assert got[1]["type"] == "live_comment"
    assert inbound.comment_time(db, "shop", "c-17") == at
    assert inbound.comment_time(db, "shop", "c-live") == at
    assert 0 < db.ttl(inbound.comment_key("shop", "c-17")) <= inbound.REMEMBER_SECONDS
    assert inbound.last_user_message(db, "shop", "P8") is None  # a comment is not a message


def test_events_of_an_account_igsend_does_not_serve_are_kept_without_an_account(api: str,
                                                                                db: redis_lib.Redis) -> None:
    document = batch(STRANGER_ID, item("P1", STRANGER_ID, 1_760_000_400_000,
                                       message={"mid": "m-stranger", "text": "hello?"}))
    assert post(api, document).status_code == 200
    event = settled(db, 1)[0]
    assert (event["account"], event["account_id"], event["mid"]) == ("", STRANGER_ID, "m-stranger")
    assert list(db.scan_iter("igsend:lastwrote:*")) == []


def test_nothing_from_the_request_headers_is_stored(api: str, db: redis_lib.Redis) -> None:
    document = batch(SHOP_ID, item("P1", SHOP_ID, 1_760_000_500_000, message={"mid": "m-headers", "text": "h"}))
    body = json.dumps(document).encode()
    signature = sign(body)
    answer = requests.post(api, data=body, headers={"X-Hub-Signature-256": signature, "Authorization": f"Bearer {KEY}",
                                                    "X-Custom": "secret-header-value"}, timeout=5)
    assert answer.status_code == 200
    settled(db, 1)
    dump = json.dumps([db.dump(key).hex() for key in db.scan_iter("*")])  # every value, as stored
    for needle in (signature.removeprefix("sha256="), KEY, "secret-header-value", APP_SECRET, OTHER_SECRET):
        assert needle.encode().hex() not in dump, needle


# --- the inbox: store first, process after ----------------------------------------------------------------------

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


def test_a_delivery_that_cannot_be_stored_is_answered_503(fresh_settings: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from igsend.local.embedded_redis import free_port
    from producers.api import create_app

    monkeypatch.setenv("IGSEND_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv("IGSEND_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("IGSEND_ENV_FILE", "/nonexistent/.env")
    monkeypatch.delenv("IGSEND_WEBHOOK_VERIFY_TOKEN", raising=False)
    reset_client_caches()
    client = create_app(api_keys=["k"]).test_client()
    body = json.dumps(batch(SHOP_ID, item("P1", SHOP_ID, 1, message={"mid": "m", "text": "t"}))).encode()
    answer = client.post("/webhooks/instagram", data=body, headers={"X-Hub-Signature-256": sign(body)})
    assert answer.status_code == 503


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


def test_the_webhook_routes_are_not_in_the_openapi_document() -> None:
    from producers.api import create_app

    paths = create_app(require_keys=False).test_client().get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path.startswith("/webhooks")]


def test_docs_page_lists_the_stream_fields() -> None:
    from producers.webhook_inbox import FIELDS

    page = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text(encoding="utf-8")
    assert [name for name in FIELDS if f"| `{name}` |" not in page] == []


def test_a_facebook_login_account_is_found_by_its_instagram_id(redis_url: str, tmp_path: Path) -> None:
    """A Page-linked account is declared by its Page id; Meta's webhooks name the Instagram account: the accounts
    file's ``instagram_id`` maps one to the other."""
    from igsend.core.presence import Heartbeat, forget
    from producers.webhook_inbox import accounts_by_id
    from workers.accounts import load_accounts

    client = redis_lib.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{QUIET_DB}", decode_responses=True)
    client.flushdb()
    try:
        path = tmp_path / "accounts.toml"
        path.write_text('[accounts.page]\nid = "104000000000009"\nlogin = "facebook"\ntoken = "EAApagetoken123"\n'
                        'instagram_id = "17841400000000066"\n')
        public = load_accounts({"IGSEND_ACCOUNTS_FILE": str(path)})["page"].public()
        assert public["instagram_id"] == "17841400000000066" and "EAApagetoken123" not in json.dumps(public)
        Heartbeat("webhook-test-worker", [public], client).beat()
        forget()
        assert accounts_by_id(client) == {"104000000000009": ("page",), "17841400000000066": ("page",)}
    finally:
        client.flushdb()
        forget()
