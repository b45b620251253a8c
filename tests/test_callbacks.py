"""Status callbacks end to end: a worker with a callbacks file delivers through the sandbox, and a receiver of the
test's own, verifying every signature with the Standard Webhooks library, gets each event; plus the endpoints file's
errors and the address checks, in-process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from standardwebhooks import Webhook

import producers
from igsend.core import callbacks
from tests.conftest import reset_client_caches, wait_until, worker_env

DB = 8  # the callbacks worker's own database: no other worker takes its messages, no other job's events
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """An HTTP endpoint that verifies each callback and keeps it; answers scripted statuses first, then 204."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.started: list[str] = []  # webhook-id of every request, as it arrives
        self.script: list[int] = []  # statuses to answer, in turn; 0 = never answer
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name: value for name, value in self.headers.items()}
                try:
                    document = Webhook(SECRET).verify(body, headers)
                except Exception as exc:  # noqa: BLE001 - whatever it was, the callback did not verify
                    receiver.refused.append(str(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 204
                    receiver.started.append(headers["webhook-id"])
                if status == 0:  # hang: the sender is killed while it waits for this answer
                    time.sleep(60)
                    return
                with receiver.lock:
                    receiver.received.append({"id": headers["webhook-id"], "status": status, **document})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/igsend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for event in self.received if event["data"].get("id") == job_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@contextmanager
def endpoint_answering(status: int = 204, headers: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """A local endpoint answering every POST with ``status`` (and ``headers``): its base URL, and the paths it was
    sent, in order."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            paths.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def callbacks_url(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    redis_lib.Redis.from_url(url).flushdb()
    yield url
    redis_lib.Redis.from_url(url).flushdb()


def start_callbacks_worker(url: str, sandbox: str, accounts_file: Path, receiver: Receiver, folder: Path) -> Any:
    from igsend.local.processes import start_worker

    (folder / "callbacks.toml").write_text(f"""
[endpoints.crm]
url = "{receiver.url}"
secret_env = "CRM_WEBHOOK_SECRET"
events = ["message.delivered", "message.dead", "message.cancelled", "message.read", "message.reaction"]
allow_http = true
allow_private = true
""")
    env = worker_env(url, sandbox, accounts_file, IGSEND_CALLBACKS_FILE=str(folder / "callbacks.toml"),
                     CRM_WEBHOOK_SECRET=SECRET)
    return start_worker(env=env, log_path=folder / f"worker-{time.time():.0f}.log", concurrency=8)


@pytest.fixture(scope="module")
def callbacks_worker(callbacks_url: str, sandbox: str, accounts_file: Path, receiver: Receiver,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    service = start_callbacks_worker(callbacks_url, sandbox, accounts_file, receiver,
                                     tmp_path_factory.mktemp("callbacks"))
    yield service
    service.stop()


@pytest.fixture
def on_callbacks_db(callbacks_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis_lib.Redis]:
    monkeypatch.setenv("IGSEND_REDIS_URL", callbacks_url)
    reset_client_caches()
    yield redis_lib.Redis.from_url(callbacks_url, decode_responses=True)
    monkeypatch.undo()
    reset_client_caches()


@pytest.mark.usefixtures("callbacks_worker")
def test_delivered_and_dead_events_are_signed_and_received_once_each(receiver: Receiver, sandbox: str,
                                                                      on_callbacks_db: redis_lib.Redis) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "cb-dead", "faults": [
        {"code": 100, "subcode": 2018001, "sticky": True}]}, timeout=5).raise_for_status()
    delivered = producers.send_text("cb-ok", "a callback, please")
    dead = producers.send_text("cb-dead", "this one is refused")
    delivered.wait(timeout=30)
    dead.wait(timeout=30)
    wait_until(lambda: receiver.of(delivered.id) and receiver.of(dead.id), timeout=30)
    time.sleep(1.0)  # proves a negative: nothing arrives twice
    [ok] = receiver.of(delivered.id)
    [refused] = receiver.of(dead.id)
    assert ok["type"] == "message.delivered" and ok["data"]["status"] == "delivered"
    assert ok["data"]["result"]["message_id"] == delivered.info()["result"]["message_id"]
    assert refused["type"] == "message.dead" and refused["data"]["status"] == "dead"
    assert "message" not in refused["data"]  # the text only for an endpoint with include_text
    assert ok["id"] != refused["id"] and receiver.refused == []
    assert ok["timestamp"].endswith("Z")


@pytest.mark.usefixtures("callbacks_worker")
def test_a_receiver_that_fails_once_gets_the_retry_with_the_same_webhook_id(
        receiver: Receiver, on_callbacks_db: redis_lib.Redis) -> None:
    with receiver.lock:
        receiver.script[:] = [500]
    job = producers.send_text("cb-retry", "again, please")
    wait_until(lambda: len(receiver.of(job.id)) == 2, timeout=40)
    first, second = receiver.of(job.id)
    assert (first["status"], second["status"]) == (500, 204)
    assert first["id"] == second["id"]  # the receiver's idempotency key
    state = callbacks.state(on_callbacks_db, "crm")
    assert state["retries"] >= 1 and state["last_error"].startswith("HTTP 500")


@pytest.mark.usefixtures("callbacks_worker")
def test_a_jobs_events_arrive_in_order_behind_a_retry(receiver: Receiver, sandbox: str,
                                                       on_callbacks_db: redis_lib.Redis) -> None:
    """A job dead-lettered, its event refused once, then replayed and delivered: the delivered event waits behind
    the dead one's retry."""
    from igsend.core import dlq

    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "cb-order", "faults": [
        {"code": 100, "subcode": 2018001, "sticky": True}]}, timeout=5).raise_for_status()
    with receiver.lock:
        receiver.script[:] = [503]
    job = producers.send_text("cb-order", "dead first, delivered after a replay")
    assert job.wait(timeout=30).value == "dead"
    wait_until(lambda: receiver.of(job.id), timeout=30)  # the dead event, refused
    requests.delete(f"{sandbox}/_sandbox/faults", timeout=5)
    assert dlq.replay(job.id)
    assert job.wait(timeout=30).value == "delivered"
    wait_until(lambda: len(receiver.of(job.id)) == 3, timeout=40)
    assert [(e["type"], e["status"]) for e in receiver.of(job.id)] == [
        ("message.dead", 503), ("message.dead", 204), ("message.delivered", 204)]


@pytest.mark.usefixtures("callbacks_worker")
def test_a_read_receipt_and_a_reaction_reach_the_endpoint_after_the_delivered_event(
        receiver: Receiver, callbacks_url: str, on_callbacks_db: redis_lib.Redis,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Meta's webhooks reach a real ``igsend api`` on the same Redis; the worker's sender reports them as the job's
    message.read and message.reaction events, after its message.delivered."""
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command
    from tests.test_read_receipts import APP_SECRET, deliver_webhook, from_person

    port = free_port()
    api = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                        env={"IGSEND_REDIS_URL": callbacks_url, "IGSEND_API_KEYS": "callbacks-key",
                             "IGSEND_APP_SECRET": APP_SECRET, "IGSEND_WEBHOOK_VERIFY_TOKEN": "verify-0123456789"},
                        ready_url=f"http://127.0.0.1:{port}/openapi.json",
                        log_path=tmp_path_factory.mktemp("logs") / "callbacks-api.log")
    try:
        job = producers.send_text("cb-read", "read me, react to me")
        mid = job.result(timeout=30)["message_id"]
        now = int(time.time() * 1000)
        deliver_webhook(f"http://127.0.0.1:{port}/webhooks/instagram",
                        from_person(now, read={"mid": mid}),
                        from_person(now + 1, reaction={"mid": mid, "action": "react", "reaction": "love",
                                                       "emoji": "❤️"}))
        wait_until(lambda: len(receiver.of(job.id)) == 3, timeout=40)
    finally:
        api.stop()
    delivered, read, reaction = receiver.of(job.id)
    assert [delivered["type"], read["type"], reaction["type"]] == ["message.delivered", "message.read",
                                                                   "message.reaction"]
    assert read["data"]["status"] == "delivered" and read["data"]["read_at"] is not None
    assert reaction["data"]["reaction"] == {"mid": mid, "reaction": "love", "emoji": "❤️", "action": "react"}


def test_a_sender_killed_while_it_waits_for_the_answer_leaves_the_event_to_the_next_one(
        redis_url: str, sandbox: str, accounts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB + 1}"  # its own database: the module's worker holds no lease here
    client = redis_lib.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    receiver = Receiver()
    receiver.script[:] = [0]
    first = start_callbacks_worker(url, sandbox, accounts_file, receiver, tmp_path)
    try:
        monkeypatch.setenv("IGSEND_REDIS_URL", url)
        reset_client_caches()
        job = producers.send_text("cb-kill", "the sender dies before the answer")
        wait_until(lambda: receiver.started, timeout=30)
        first.kill()  # SIGKILL: the event is in the endpoint's sending list, unanswered
        assert client.llen(callbacks.key("crm", "sending")) == 1
        second = start_callbacks_worker(url, sandbox, accounts_file, receiver, tmp_path)
        try:
            wait_until(lambda: receiver.of(job.id), timeout=40)  # once the dead holder's lease ran out
        finally:
            second.stop()
        [event] = receiver.of(job.id)
        assert event["type"] == "message.delivered" and receiver.started == [event["id"], event["id"]]
    finally:
        first.kill()
        receiver.server.shutdown()
        client.flushdb()
        monkeypatch.undo()
        reset_client_caches()


def test_the_endpoints_file_names_the_endpoint_field_and_rule(tmp_path: Path) -> None:
    def problem(text: str, **environ: str) -> str:
        path = tmp_path / "callbacks.toml"
        path.write_text(text)
        with pytest.raises(callbacks.CallbacksFileError) as caught:
            callbacks.load(str(path), environ=environ)
        return str(caught.value)

    assert problem('[endpoints.crm]\nurl = "http://crm.example.com/x"\nsecret = "' + SECRET + '"\n') == \
        f"IGSEND_CALLBACKS_FILE: {tmp_path}/callbacks.toml: endpoints.crm.url: must be an https:// URL (plain " \
        "http:// only with allow_http = true)"
    assert problem('[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret_env = "NOPE"\n').endswith(
        "endpoints.crm.secret_env: the variable NOPE is not set")
    assert problem('[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret = "' + SECRET + '"\n'
                   'events = ["message.sent"]\n').startswith(
        f"IGSEND_CALLBACKS_FILE: {tmp_path}/callbacks.toml: endpoints.crm.events: ")
    text = problem('[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret = "not-a-whsec-value"\n')
    assert "whsec_" in text and "not-a-whsec-value" not in text  # the rule, never the secret
    endpoint = callbacks.load(str(tmp_path / "ok.toml") if (tmp_path / "ok.toml").write_text(
        '[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret_env = "S"\naccounts = ["shop"]\n') else "",
        environ={"S": SECRET})["crm"]
    assert endpoint.wants("message.delivered", "shop") and not endpoint.wants("message.delivered", "other")
    assert not endpoint.wants("inbound.message", "shop")  # default: every message.* event, no inbound one
    assert SECRET not in repr(endpoint)


def test_an_endpoint_on_a_loopback_address_is_refused_without_allow_private() -> None:
    from workers.callback_http import reachable, session
    from workers.callbacks import send_once

    with endpoint_answering() as (base, hits):
        port = base.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "localhost"):  # a name that resolves to loopback is refused as well
            endpoint = callbacks.Endpoint(name="local", url=f"http://{host}:{port}/x", secret=SECRET,
                                          allow_http=True)
            answer = send_once(session(allow_private=False), endpoint, "msg_1", json.dumps({"type": "test"}))
            assert not answer.ok and answer.error.startswith("refused: ") and "allow_private" in answer.error
        assert hits == []  # nothing was sent
        allowed = callbacks.Endpoint(name="local", url=f"{base}/x", secret=SECRET, allow_http=True,
                                     allow_private=True)
        assert send_once(session(allow_private=True), allowed, "msg_2", "{}").ok and hits == ["/x"]
    assert [reachable(a) for a in ("8.8.8.8", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1",
                                   "100.64.0.1", "2606:4700::1111")] == [True, False, False, False, False, False,
                                                                          True]


def test_fan_out_copies_each_entry_to_the_endpoints_that_want_it_and_counts_entries_trimmed_before_it(
        redis_url: str) -> None:
    from igsend.core.store import OUTCOMES_KEY, STATS_KEY

    client = redis_lib.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB + 2}", decode_responses=True)
    client.flushdb()
    try:
        crm = callbacks.Endpoint(name="crm", url="https://crm.example.com/x", secret=SECRET, accounts=("shop",))
        audit = callbacks.Endpoint(name="audit", url="https://audit.example.com/x", secret=SECRET,
                                   events=("message.dead",))
        callbacks.ensure_groups(client)
        for job, status, account in (("j1", "delivered", "shop"), ("j2", "dead", "shop"), ("j3", "dead", "other"),
                                     ("j4", "sending", "shop")):
            client.xadd(OUTCOMES_KEY, {"id": job, "status": status, "account": account, "at": "1000.5"})
        assert callbacks.fan_out(client, [crm, audit], consumer="leader") == 4
        queued = {name: [json.loads(raw)["job"] for raw in client.lrange(callbacks.key(name, "queue"), 0, -1)]
                  for name in ("crm", "audit")}
        assert queued == {"crm": ["j1", "j2"], "audit": ["j2", "j3"]}
        assert client.xpending(OUTCOMES_KEY, callbacks.GROUP)["pending"] == 0
        # Entries read but not acknowledged (a holder that died), then trimmed away by the stream's cap.
        client.xadd(OUTCOMES_KEY, {"id": "j5", "status": "delivered", "account": "shop", "at": "1001"})
        client.xreadgroup(callbacks.GROUP, "leader", {OUTCOMES_KEY: ">"})
        client.xtrim(OUTCOMES_KEY, maxlen=0)
        assert callbacks.fan_out(client, [crm, audit], consumer="leader") == 1
        assert client.hget(STATS_KEY, "callback_events_trimmed_total") == "1"
        assert client.llen(callbacks.key("crm", "queue")) == 2
    finally:
        client.flushdb()


@pytest.mark.parametrize(("fields", "expected"), [
    ({"type": "message", "is_echo": "0", "is_deleted": "0"}, "inbound.message"),
    ({"type": "message", "is_echo": "1"}, None),  # the business's own message coming back
    ({"type": "message", "is_deleted": "1"}, None),
    ({"type": "postback"}, "inbound.postback"),
    ({"type": "comment"}, "inbound.comment"),
    ({"type": "live_comment"}, "inbound.comment"),
    ({"type": "read", "job_id": "j1"}, "message.read"),
    ({"type": "read", "job_id": ""}, None),  # a message igsend did not send (or whose record expired)
    ({"type": "reaction", "job_id": "j1"}, "message.reaction"),
    ({"type": "reaction", "job_id": ""}, "inbound.reaction"),
    ({"type": "referral"}, None),
])
def test_each_inbound_event_becomes_the_callback_event_of_its_kind(fields: dict[str, str],
                                                                   expected: str | None) -> None:
    event = callbacks.event_of_inbound("1-0", {**fields, "account": "shop", "timestamp": "1000.5", "raw": "{}"})
    assert (event["type"] if event else None) == expected
    if event is not None:
        assert event["webhook_id"] == "msg_i1-0" and event["at"] == 1000.5
        assert "raw" not in event.get("inbound", {})


@pytest.mark.parametrize(("status", "headers", "expect"), [
    (410, {}, "disabled"),  # Gone: the endpoint is disabled, the event kept as failed
    (429, {"Retry-After": "120"}, "retry in 120 s"),  # Retry-After honoured on 429/503
    (302, {"Location": "/elsewhere"}, "retry in 5 s"),  # a redirect is not followed: a failed try, the schedule
])
def test_an_endpoints_answer_decides_the_next_try(redis_url: str, status: int, headers: dict[str, str],
                                                  expect: str) -> None:
    from workers.callbacks import EndpointSender

    client = redis_lib.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/15", decode_responses=True)  # its own
    client.flushdb()
    try:
        with endpoint_answering(status, headers) as (base, paths):
            endpoint = callbacks.Endpoint(name="crm", url=f"{base}/hook", secret=SECRET, allow_http=True,
                                          allow_private=True)
            now = 1_000_000.0
            sender = EndpointSender(client, endpoint, threading.Event(), threading.Event(), clock=lambda: now)
            client.rpush(callbacks.key("crm", "queue"), json.dumps({"webhook_id": "msg_1", "type": "test", "job": "j1",
                                                                    "account": "shop", "at": now}))
            assert sender.pass_once()
            assert paths == ["/hook"]  # once, and never to /elsewhere
            state = callbacks.state(client, "crm")
            if expect == "disabled":
                assert state["state"] == "disabled" and "410" in state["disabled_reason"]
                assert [e["webhook_id"] for e in callbacks.failed_events(client, "crm")] == ["msg_1"]
                assert not sender.pass_once()  # a disabled endpoint is sent nothing more
            else:
                seconds = float(expect.split()[2])
                assert client.zscore(callbacks.key("crm", "waiting"), "j1") == now + seconds
                assert state["retries"] == 1 and state["failed"] == 0
            assert client.llen(callbacks.key("crm", "sending")) == 0
    finally:
        client.flushdb()
