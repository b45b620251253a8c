"""The sandbox's rules, in-process: the aiohttp app served from a thread of the test process and spoken to over
HTTP as igsend speaks to Meta. The seed's request shapes and tokens, validation, login kinds and their budgets,
usage headers, error bodies per host and code, routes other than the Send API, scripted and magic faults per
recipient, account and app, and the introspection endpoints.

Starting it as a program (flags, IGSEND_SANDBOX_TOKENS, SIGTERM) is test_sandbox_process; ``Server``, ``start``
and ``stop`` below start it as a program for that file and test_meta_samples."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from sandbox import SandboxConfig, create_app
from sandbox.server import DEFAULT_APP_VERSION
from tests.conftest import wait_until
from workers.accounts import DEFAULT_API_VERSION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "tok-1"  # neither IG nor EAA: the default login kind (instagram)
ENV_TOKEN = "tok-from-env-7f3a"
IG_TOKEN = "IGQWRtest" + "a" * 30  # Instagram Login user token
PAGE_TOKEN = "EAAtest" + "b" * 30  # Facebook Login Page token
PLAIN_TOKEN = "plain-token-1"  # neither prefix: the default login kind
VERSION = DEFAULT_API_VERSION  # what igsend sends with unless IGSEND_API_VERSION says otherwise
TOKENS = [TOKEN, ENV_TOKEN, IG_TOKEN, PAGE_TOKEN, PLAIN_TOKEN]
ACCOUNT = "17841400000000000"
IG_ACCOUNT, PAGE_ACCOUNT, PLAIN_ACCOUNT = "17841400000000011", "104000000000022", "17841400000000033"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

pytestmark = pytest.mark.timeout(60)


@dataclass
class Server:
    """A running sandbox: ``process`` is its child process, or None when it is served in-process."""

    process: subprocess.Popen | None
    url: str

    def post(self, body: dict | None = None, *, token: str | None = TOKEN, account: str = ACCOUNT,
             version: str = VERSION, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(f"{self.url}/{version}/{account}/messages", json=body, headers=headers,
                             timeout=5, **kwargs)

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()

    def messages(self, **params) -> list[dict]:
        return self.get("/_sandbox/messages", **params)["messages"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*args: str, env_tokens: str = "") -> Server:
    """``python -m sandbox`` as a child process, once it answers /healthz."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "IGSEND_SANDBOX_TOKENS": env_tokens}
    command = [sys.executable, "-m", "sandbox", "--port", str(port), *args]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    server = Server(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if requests.get(f"{server.url}/healthz", timeout=0.5).json() == {"ok": True}:
                return server
        except requests.RequestException:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the sandbox did not start")


def stop(server: Server) -> str:
    """SIGTERM the child process; its output."""
    assert server.process is not None
    server.process.terminate()
    try:
        output, _ = server.process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    return output


@contextmanager
def serve(config: SandboxConfig) -> Iterator[Server]:
    """The sandbox's app on an ephemeral port, served by an event loop on a thread of this process: the same
    HTTP as the program (a hang still drops a real connection), without a child process to start."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox-loop", daemon=True)
    thread.start()

    async def begin() -> TestServer:
        server = TestServer(create_app(config))
        await server.start_server()
        return server

    server = asyncio.run_coroutine_threadsafe(begin(), loop).result(10)
    try:
        yield Server(None, f"http://{server.host}:{server.port}")
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Server]:
    with serve(SandboxConfig(tokens=TOKENS, seed=1)) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> None:
    """Each test against the module's sandbox starts with no messages, stats or faults, and Meta's budgets."""
    if "sandbox" not in request.fixturenames:
        return
    url = request.getfixturevalue("sandbox").url
    requests.delete(f"{url}/_sandbox/messages", timeout=5).raise_for_status()
    requests.delete(f"{url}/_sandbox/faults", timeout=5).raise_for_status()
    requests.post(f"{url}/_sandbox/config", timeout=5, json={
        "latency_ms": 0, "error_rate": 0, "rate_limit": None, "media_rate_limit": None, "default_login": "instagram",
        "logins": {PLAIN_ACCOUNT: None, "me": None}}).raise_for_status()


def text(recipient: str = "IGSID", value: str = "hi") -> dict:
    return {"recipient": {"id": recipient}, "message": {"text": value}}


def attachment(kind: str, payload: dict | None = None, recipient: str = "IGSID") -> dict:
    body: dict = {"type": kind}
    if payload is not None:
        body["payload"] = payload
    return {"recipient": {"id": recipient}, "message": {"attachment": body}}


def graph_error(response: requests.Response, status: int = 400, error_type: str = "IGApiException") -> dict:
    """Meta's error body; TOKEN starts neither IG nor EAA, so it is an Instagram-Login token by default."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type and error["fbtrace_id"]
    return error


# --- success ------------------------------------------------------------------------------------------------

MESSAGE_KINDS = {
    "text": text(),
    "link": text(value="https://example.com/offer?a=1"),
    "image": attachment("image", {"url": "https://cdn.example.com/a.png"}),
    "video": attachment("video", {"url": "https://cdn.example.com/a.mp4"}),
    "audio": attachment("audio", {"url": "http://cdn.example.com/a.m4a"}),
    "file": attachment("file", {"url": "https://cdn.example.com/a.pdf"}),
    "MEDIA_SHARE": attachment("MEDIA_SHARE", {"id": "17900000000000000"}),
    "like_heart": attachment("like_heart"),
}


@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_json_bearer_message_kinds_answer_a_message_id(sandbox: Server, kind: str) -> None:
    answer = sandbox.post(MESSAGE_KINDS[kind])
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"recipient_id", "message_id"}
    assert answer.json()["recipient_id"] == "IGSID" and answer.json()["message_id"]
    [seen] = sandbox.messages()
    assert seen["body"] == MESSAGE_KINDS[kind] and seen["message_id"] == answer.json()["message_id"]
    assert (seen["token_placement"], seen["content_type"]) == ("header", "application/json")
    assert (seen["account"], seen["version"]) == (ACCOUNT, VERSION)
    assert seen["path"] == f"/{VERSION}/{ACCOUNT}/messages"


@pytest.mark.parametrize("version", ["v27.0", "v26.0", "v25.0"])
def test_the_current_and_the_earlier_versions_are_served(sandbox: Server, version: str) -> None:
    """v27.0 is igsend's default since 2026-11-04; v26.0 and v25.0 stay served (GRAPH_API_NOTES.md)."""
    answer = sandbox.post(MESSAGE_KINDS["text"], version=version)
    assert answer.status_code == 200, answer.text
    [seen] = sandbox.messages()
    assert (seen["version"], seen["served_version"], seen["path"]) == (version, version,
                                                                       f"/{version}/{ACCOUNT}/messages")


def test_the_sandbox_app_is_on_the_version_igsend_sends_by_default() -> None:
    """An unversioned call is served with the app's version: the sandbox's app is as new as igsend's default."""
    assert DEFAULT_APP_VERSION == DEFAULT_API_VERSION == "v27.0"


@pytest.mark.parametrize("action,payload", [
    ("react", {"message_id": "MID", "reaction": "love"}),
    ("unreact", {"message_id": "MID"}),
    ("typing_on", None),
    ("mark_seen", None),
])
def test_sender_actions_answer_the_recipient_only(sandbox: Server, action: str, payload: dict | None) -> None:
    body: dict = {"recipient": {"id": "IGSID"}, "sender_action": action}
    if payload:
        body["payload"] = payload
    answer = sandbox.post(body)
    assert answer.status_code == 200 and answer.json() == {"recipient_id": "IGSID"}
    assert sandbox.messages()[0]["message_id"] is None


def test_message_ids_are_fresh_and_unique(sandbox: Server) -> None:
    ids = [sandbox.post(text(value="same")).json()["message_id"] for _ in range(10)]
    ids += [sandbox.post(body).json()["message_id"] for body in MESSAGE_KINDS.values()]
    assert len(set(ids)) == len(ids) == 18


def test_the_seeds_form_requests_with_a_query_token(sandbox: Server) -> None:
    url = f"{sandbox.url}/{VERSION}/me/messages?access_token={TOKEN}"
    shapes = [  # the seed's --data strings (its typographic quotes and trailing commas left out)
        ('recipient={"id":"IGSID"}&message={"text":"TEXT-OR-LINK"}', True),
        ('recipient={"id":"IGSID"}&message={\n      "attachment": \n        {\n'
         '          "type":"MEDIA_SHARE", \n          "payload":{"id":"POST-ID"}\n        }\n}', True),
        ('recipient={"id":"IGSID"}&message={\n      "attachment": \n        {\n'
         '          "type":"like_heart"\n        }\n}', True),
        ('recipient={"id":"IGSID"}&sender_action=react&payload={\n      "message_id":"MESSAGE-ID",\n'
         '      "reaction":"love"\n}', False),
        ('recipient={"id":"IGSID"}&sender_action="unreact"&payload={\n      "message_id":"MESSAGE-ID"\n}',
         False),
    ]
    for data, has_id in shapes:
        answer = requests.post(url, data=data, headers=FORM, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["recipient_id"] == "IGSID" and ("message_id" in answer.json()) == has_id
    seen = sandbox.messages()
    assert len(seen) == 5
    assert {(m["token_placement"], m["content_type"]) for m in seen} == {
        ("query", "application/x-www-form-urlencoded")}
    assert seen[0]["body"] == text(value="TEXT-OR-LINK")
    assert seen[1]["body"]["message"]["attachment"] == {"type": "MEDIA_SHARE", "payload": {"id": "POST-ID"}}
    assert seen[4]["body"] == {"recipient": {"id": "IGSID"}, "sender_action": "unreact",
                               "payload": {"message_id": "MESSAGE-ID"}}
    assert seen[0]["account"].startswith("me-") and TOKEN not in seen[0]["account"]


def test_a_token_in_a_form_field_and_a_second_token(sandbox: Server) -> None:
    data = {"access_token": TOKEN, "recipient": '{"id":"IGSID"}', "message": '{"text":"hi"}'}
    answer = requests.post(f"{sandbox.url}/{VERSION}/{ACCOUNT}/messages", data=data, timeout=5)
    assert answer.status_code == 200, answer.text
    assert sandbox.post(text(), token=ENV_TOKEN).status_code == 200
    seen = sandbox.messages()
    assert [m["token_placement"] for m in seen] == ["form", "header"]
    assert "access_token" not in seen[0]["body"]


def test_unknown_versions_and_account_ids_are_refused(sandbox: Server) -> None:
    assert graph_error(sandbox.post(text(), version="latest"))["code"] == 2500
    assert graph_error(sandbox.post(text(), account="a-b"))["code"] == 803
    assert sandbox.messages() == []


# --- refusals -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "nope", ""])
def test_missing_or_unknown_tokens_answer_190(sandbox: Server, token: str | None) -> None:
    error = graph_error(sandbox.post(text(), token=token))
    assert error["code"] == 190
    assert error["message"] == "Invalid OAuth access token - Cannot parse access token"
    assert sandbox.messages() == []


@pytest.mark.parametrize("body", [
    text(value="é" * 500 + "a"),  # 501 characters but 1001 UTF-8 bytes
    text(value="😀" * 250 + "a"),
    text(value=""),
    {"recipient": {"id": "IGSID"}, "message": {"text": "hi", "attachment": {"type": "like_heart"}}},
    {"recipient": {"id": "IGSID"}, "message": {}},
    attachment("hologram"),
    attachment("image", {"url": "ftp://cdn.example.com/a.png"}),
    attachment("video"),
    attachment("MEDIA_SHARE", {}),
    {"recipient": {"id": "IGSID"}, "sender_action": "react", "payload": {"reaction": "love"}},
    {"recipient": {"id": "IGSID"}, "sender_action": "react", "payload": {"message_id": "MID"}},
    {"recipient": {"id": "IGSID"}, "sender_action": "unreact"},
    {"recipient": {"id": "IGSID"}, "sender_action": "dance"},
    {"recipient": {"id": "IGSID"}, "message": {"text": "hi"}, "sender_action": "typing_on"},
    {"recipient": {"id": "IGSID"}},
    {"recipient": {"id": ""}, "message": {"text": "hi"}},
    {"recipient": "IGSID", "message": {"text": "hi"}},
    {"message": {"text": "hi"}},
], ids=lambda body: json.dumps(body, ensure_ascii=False)[:60])
def test_invalid_bodies_answer_100(sandbox: Server, body: dict) -> None:
    error = graph_error(sandbox.post(body))
    assert error["code"] == 100 and error["message"].startswith("(#100) ") and error["error_subcode"]
    assert sandbox.messages() == [] and sandbox.get("/_sandbox/stats")["errors"] == {"100": 1}


@pytest.mark.parametrize("body,subcode", [
    ({"message": {"text": "hi"}}, 2018001),
    ({"recipient": {"id": "r"}, "message": {"text": "é" * 501}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"text": ""}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"text": "a", "attachment": {"type": "like_heart"}}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"attachment": {"type": "hologram"}}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"attachment": {"type": "image", "payload": {"url": "ftp://x"}}}}, 2018047),
    ({"recipient": {"id": "r"}, "sender_action": "react", "payload": {"reaction": "love"}}, 2534015),
])
def test_invalid_parameters_name_their_subcode(sandbox: Server, body: dict, subcode: int) -> None:
    answer = sandbox.post(body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 100 and error["error_subcode"] == subcode and error["type"] == "IGApiException"
    assert error["fbtrace_id"]


def test_exactly_1000_bytes_is_accepted(sandbox: Server) -> None:
    assert sandbox.post(text(value="é" * 500)).status_code == 200
    assert sandbox.post(text(value="a" * 1000)).status_code == 200


@pytest.mark.parametrize("data,content_type", [
    ("{not json", "application/json"),
    ('["a list"]', "application/json"),
    ('recipient={"id":"IGSID"}&message={"text":', "application/x-www-form-urlencoded"),
])
def test_unparseable_bodies_answer_100(sandbox: Server, data: str, content_type: str) -> None:
    answer = requests.post(f"{sandbox.url}/{VERSION}/{ACCOUNT}/messages", data=data, timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
    assert graph_error(answer)["code"] == 100


# --- limits and usage headers -------------------------------------------------------------------------------

def usage(response: requests.Response, account: str = ACCOUNT) -> tuple[dict, dict]:
    app = json.loads(response.headers["X-App-Usage"])
    [buc] = json.loads(response.headers["X-Business-Use-Case-Usage"])[account]
    return app, buc


def test_rate_limits_per_account_and_class() -> None:
    with serve(SandboxConfig(tokens=[TOKEN], rate_limit=5, media_rate_limit=2)) as server:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"

            def burst(body: dict, count: int, account: str = ACCOUNT) -> list[requests.Response]:
                return [session.post(f"{server.url}/{VERSION}/{account}/messages", json=body, timeout=5)
                        for _ in range(count)]

            answers = burst(text(), 12)
            accepted = [a for a in answers if a.status_code == 200]
            throttled = [a for a in answers if a.status_code != 200]
            assert 5 <= len(accepted) <= 6 and len(throttled) == 12 - len(accepted)
            for answer in throttled:  # the sandbox's choice for 613: 429 (Meta documents no status)
                error = graph_error(answer, status=429)
                assert (error["code"], error["error_subcode"]) == (613, 2534040)
                assert int(answer.headers["Retry-After"]) >= 1
                app, buc = usage(answer)
                assert app["call_count"] == buc["call_count"] == 100 and buc["type"] == "instagram"
                assert buc["estimated_time_to_regain_access"] >= 1
            # video and audio share their own budget; images count as text
            videos = burst(attachment("video", {"url": "https://v.example/a.mp4"}), 2)
            audios = burst(attachment("audio", {"url": "https://v.example/a.m4a"}), 2)
            assert [a.status_code for a in videos] == [200, 200]
            assert graph_error(audios[0], status=429)["code"] == 613
            [image] = burst(attachment("image", {"url": "https://i.example/a.png"}), 1)
            assert graph_error(image, status=429)["code"] == 613
            # another account has budgets of its own
            assert [a.status_code for a in burst(text(), 5, account="999")] == [200] * 5
        stats = server.get("/_sandbox/stats")
        assert stats["throttled"] == len(throttled) + 3 and stats["errors"]["613"] == stats["throttled"]
        assert stats["by_account"][ACCOUNT]["throttled"] == len(throttled) + 3
        assert stats["accepted"] == len(accepted) + 2 + 5


def test_usage_headers_on_every_answer(sandbox: Server) -> None:
    first = sandbox.post(text())
    app, buc = usage(first)
    assert set(app) == {"call_count", "total_time", "total_cputime"}
    assert set(buc) == {"type", "call_count", "total_cputime", "total_time",
                        "estimated_time_to_regain_access"}
    assert all(isinstance(v, int) and 0 <= v <= 100 for v in app.values())
    assert buc["estimated_time_to_regain_access"] == 0
    requests.post(f"{sandbox.url}/_sandbox/config", json={"rate_limit": 10}, timeout=5)
    percents = [usage(sandbox.post(text()))[0]["call_count"] for _ in range(5)]
    assert percents == sorted(percents) and percents[-1] >= 40  # 5 of 10 spent
    assert usage(sandbox.post(text(value="")))[0]["call_count"] >= 40  # errors carry them too
    assert "X-App-Usage" in sandbox.post(text(), token="nope").headers


def test_error_rate_one_answers_transient_code_2() -> None:
    with serve(SandboxConfig(tokens=[TOKEN], error_rate=1.0, seed=7)) as server:
        for _ in range(5):
            error = graph_error(server.post(text()), status=500)
            assert error["code"] == 2 and error["is_transient"] is True
            assert error["message"] == "An unexpected error has occurred. Please retry your request later."
        assert server.messages() == []
        stats = server.get("/_sandbox/stats")
        assert stats["accepted"] == 0 and stats["errors"] == {"2": 5}
        assert graph_error(server.post(text(), token="nope"))["code"] == 190  # auth comes first


# --- scripted faults and magic ids --------------------------------------------------------------------------

def add_faults(sandbox: Server, recipient: str, *faults: dict) -> None:
    spec = {"recipient": recipient, "faults": faults}
    response = requests.post(f"{sandbox.url}/_sandbox/faults", json=spec, timeout=5)
    response.raise_for_status()


def test_scripted_faults_are_consumed_in_order(sandbox: Server) -> None:
    add_faults(sandbox, "f1", {"code": 2, "status": 500, "is_transient": True},
               {"code": 4, "retry_after": 3}, {"code": 100, "subcode": 2018001, "message": "(#100) gone"})
    first, second, third, fourth = (sandbox.post(text("f1")) for _ in range(4))
    assert graph_error(first, status=500)["is_transient"] is True
    assert graph_error(second)["code"] == 4 and second.headers["Retry-After"] == "3"
    assert graph_error(third) | {"fbtrace_id": "x"} == {
        "message": "(#100) gone", "type": "IGApiException", "code": 100, "error_subcode": 2018001,
        "fbtrace_id": "x"}
    assert fourth.status_code == 200
    assert sandbox.post(text("other")).status_code == 200
    assert [m["recipient_id"] for m in sandbox.messages()] == ["f1", "other"]


def test_a_sticky_fault_lasts_until_faults_are_cleared(sandbox: Server) -> None:
    add_faults(sandbox, "s1", {"sticky": True, "code": 10, "subcode": 2534022})
    for _ in range(3):
        assert graph_error(sandbox.post(text("s1")), status=403)["error_subcode"] == 2534022
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()
    assert sandbox.post(text("s1")).status_code == 200


def test_a_hang_is_accepted_but_the_answer_is_lost(sandbox: Server) -> None:
    add_faults(sandbox, "h1", {"hang": True})
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.ReadTimeout)):
        sandbox.post(text("h1", "lost answer"))
    [seen] = sandbox.messages()
    assert seen["body"]["message"]["text"] == "lost answer" and seen["message_id"]
    assert sandbox.get("/_sandbox/stats")["accepted"] == 1
    assert sandbox.post(text("h1")).status_code == 200  # consumed


@pytest.mark.parametrize("recipient,code,subcode,status", [
    ("ERR_551_1545041", 551, 1545041, 400), ("ERR_100_2018001", 100, 2018001, 400), ("ERR_190_463", 190, 463, 400),
    ("ERR_2_0", 2, None, 500), ("ERR_10_2534022", 10, 2534022, 403), ("ERR_80002", 80002, None, 429),
])
def test_magic_error_recipients(sandbox: Server, recipient: str, code: int, subcode: int | None,
                                status: int) -> None:
    for _ in range(2):  # always, not once
        error = graph_error(sandbox.post(text(recipient)), status=status)
        assert (error["code"], error.get("error_subcode")) == (code, subcode)
        assert error["message"]
    assert sandbox.messages() == []


# --- introspection ------------------------------------------------------------------------------------------

def test_duplicates_are_counted_per_account(sandbox: Server) -> None:
    for body, account in [(text(value="same"), ACCOUNT), (text(value="same"), ACCOUNT),
                          (text(value="other"), ACCOUNT), (text(value="same"), "999")]:
        assert sandbox.post(body, account=account).status_code == 200
    stats = sandbox.get("/_sandbox/stats")
    assert (stats["accepted"], stats["duplicates"]) == (4, 1)
    mine = stats["by_account"][ACCOUNT]
    assert mine["accepted"] == 3 and mine["throttled"] == 0 and mine["first_at"] <= mine["last_at"]
    assert [m["seq"] for m in sandbox.messages(account="999")] == [4]


def test_tokens_never_appear_in_introspection(sandbox: Server) -> None:
    sandbox.post(text(), account="me")
    sandbox.post(text(), token=ENV_TOKEN)
    requests.post(f"{sandbox.url}/{VERSION}/me/messages", params={"access_token": TOKEN}, data={
        "recipient": '{"id":"x"}', "message": '{"text":"x"}'}, timeout=5)
    requests.post(f"{sandbox.url}/{VERSION}/me/messages", data={
        "access_token": ENV_TOKEN, "recipient": '{"id":"x"}', "message": '{"text":"x"}'}, timeout=5)
    shown = json.dumps([sandbox.get("/_sandbox/messages"), sandbox.get("/_sandbox/stats"),
                        sandbox.get("/_sandbox/config")])
    assert sandbox.get("/_sandbox/stats")["accepted"] == 4
    assert TOKEN not in shown and ENV_TOKEN not in shown
    assert sandbox.get("/_sandbox/config")["tokens"] == len(TOKENS)


def test_reset_clears_messages_stats_faults_and_buckets(sandbox: Server) -> None:
    requests.post(f"{sandbox.url}/_sandbox/config", json={"rate_limit": 2}, timeout=5)
    add_faults(sandbox, "z", {"code": 2})
    for _ in range(3):
        sandbox.post(text())
    assert sandbox.get("/_sandbox/stats")["throttled"] == 1
    requests.delete(f"{sandbox.url}/_sandbox/messages", timeout=5).raise_for_status()
    assert sandbox.messages() == []
    assert sandbox.get("/_sandbox/stats") == {"accepted": 0, "throttled": 0, "errors": {}, "duplicates": 0,
                                              "by_account": {}}
    assert sandbox.post(text()).status_code == 200 and sandbox.post(text("z")).status_code == 200


def test_live_config_and_latency(sandbox: Server) -> None:
    changed = requests.post(f"{sandbox.url}/_sandbox/config", json={"latency_ms": 200}, timeout=5).json()
    assert changed["latency_ms"] == 200 and sandbox.get("/_sandbox/config")["latency_ms"] == 200
    started = time.monotonic()
    assert sandbox.post(text()).status_code == 200
    assert time.monotonic() - started >= 0.2
    requests.post(f"{sandbox.url}/_sandbox/config", json={"latency_ms": 0, "error_rate": 1.0}, timeout=5)
    assert all(graph_error(sandbox.post(text()), status=500)["code"] == 2 for _ in range(3))  # live, no restart
    for bad in [{"error_rate": 2}, {"rate_limit": 0}, {"latency_ms": "slow"}]:
        assert requests.post(f"{sandbox.url}/_sandbox/config", json=bad, timeout=5).status_code == 400


# --- appsecret_proof ----------------------------------------------------------------------------------------

def test_appsecret_proof_is_required_when_the_app_secret_is_set() -> None:
    with serve(SandboxConfig(tokens=[TOKEN, ENV_TOKEN], app_secret="s3cret")) as server:
        proof = hmac.new(b"s3cret", TOKEN.encode(), hashlib.sha256).hexdigest()
        assert server.post(text(), params={"appsecret_proof": proof}).status_code == 200
        form = {"access_token": TOKEN, "appsecret_proof": proof, "recipient": '{"id":"r"}',
                "message": '{"text":"x"}'}
        assert requests.post(f"{server.url}/{VERSION}/me/messages", data=form, timeout=5).status_code == 200
        missing = graph_error(server.post(text()))
        assert missing["code"] == 100 and "appsecret_proof" in missing["message"]
        # a proof made for another token
        wrong = server.post(text(), token=ENV_TOKEN, params={"appsecret_proof": proof})
        assert graph_error(wrong)["code"] == 100
        seen = server.messages()
        assert len(seen) == 2 and all(m["appsecret_proof"] for m in seen)
        assert "appsecret_proof" not in seen[1]["body"]


@pytest.mark.parametrize("spec", [
    {"faults": [{"code": 2}]}, {"recipient": "r", "faults": [{"status": 500}]},
    {"recipient": "r", "faults": [{"code": 2, "status": 200}]}, {"recipient": "r", "refusal": "maybe"},
    {"account": IG_ACCOUNT, "error": "oops"}, {"account": IG_ACCOUNT, "error": {"hang": True}},
    {"account": "", "error": "unsupported_post"}, {"app": {"seconds": 0}}, {"app": {"seconds": 5, "accounts": []}},
    {"app": 5}, {"recipient": "r", "faults": [{"code": 2, "colour": "red"}]}, ["not", "an", "object"],
], ids=lambda spec: json.dumps(spec)[:50])
def test_bad_fault_specs_are_refused(sandbox: Server, spec: object) -> None:
    answer = requests.post(f"{sandbox.url}/_sandbox/faults", json=spec, timeout=5)
    assert answer.status_code == 400 and answer.json()["ok"] is False
    shown = sandbox.get("/_sandbox/faults")
    assert shown["accounts"] == {} and shown["recipients"] == {} and shown["apps"] == []


def send(sandbox: Server, token: str, account: str, recipient: str = "IGSID", body: dict | None = None,
         **kwargs) -> requests.Response:
    body = body or {"recipient": {"id": recipient}, "message": {"text": "hi"}}
    return requests.post(f"{sandbox.url}/{VERSION}/{account}/messages", json=body, timeout=5,
                         headers={"Authorization": f"Bearer {token}"}, **kwargs)


def error_of(response: requests.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == error_type and error["fbtrace_id"] and isinstance(error["code"], int)
    return error


def faults(sandbox: Server, spec: dict) -> dict:
    answer = requests.post(f"{sandbox.url}/_sandbox/faults", json=spec, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- 1. login kind and budgets ------------------------------------------------------------------------------

def test_the_token_prefix_sets_login_budgets_and_error_type(sandbox: Server) -> None:
    for token, account in [(IG_TOKEN, IG_ACCOUNT), (PAGE_TOKEN, PAGE_ACCOUNT), (PLAIN_TOKEN, PLAIN_ACCOUNT)]:
        assert send(sandbox, token, account).status_code == 200
    by_account = sandbox.get("/_sandbox/stats")["by_account"]
    assert by_account[IG_ACCOUNT]["login"] == "instagram"
    assert by_account[IG_ACCOUNT]["budgets"] == {"text": 100, "media": 10}
    assert by_account[PAGE_ACCOUNT]["login"] == "facebook"
    assert by_account[PAGE_ACCOUNT]["budgets"] == {"text": 300, "media": 10}
    assert by_account[PLAIN_ACCOUNT]["login"] == "instagram"  # --default-login
    assert [m["login"] for m in sandbox.messages()] == ["instagram", "facebook", "instagram"]
    bad = {"recipient": {"id": "r"}, "message": {"text": ""}}
    assert error_of(send(sandbox, IG_TOKEN, IG_ACCOUNT, body=bad), 400, "IGApiException")["code"] == 100
    assert error_of(send(sandbox, PAGE_TOKEN, PAGE_ACCOUNT, body=bad), 400, "OAuthException")["code"] == 100
    # the seed's own shape (form fields, query token) with a Page token is Facebook Login as well
    form = requests.post(f"{sandbox.url}/{VERSION}/me/messages", params={"access_token": PAGE_TOKEN},
                         data='recipient={"id":"IGSID"}&message={"text":""}',
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert error_of(form, 400, "OAuthException")["error_subcode"] == 2534015


def test_an_explicit_login_wins_over_the_token(sandbox: Server) -> None:
    config = requests.post(f"{sandbox.url}/_sandbox/config", json={"logins": {PLAIN_ACCOUNT: "facebook"}},
                           timeout=5).json()
    assert config["logins"] == {PLAIN_ACCOUNT: "facebook"} and config["rate_limit"] is None
    assert config["budgets"] == {"instagram": {"text": 100, "media": 10}, "facebook": {"text": 300, "media": 10}}
    bad = {"recipient": {"id": "r"}, "sender_action": "dance"}
    assert error_of(send(sandbox, PLAIN_TOKEN, PLAIN_ACCOUNT, body=bad), 400, "OAuthException")
    assert send(sandbox, PLAIN_TOKEN, PLAIN_ACCOUNT).status_code == 200
    assert sandbox.get("/_sandbox/stats")["by_account"][PLAIN_ACCOUNT]["budgets"]["text"] == 300
    wrong_method = requests.get(f"{sandbox.url}/{VERSION}/{PLAIN_ACCOUNT}/messages", timeout=5,
                                headers={"Authorization": f"Bearer {PLAIN_TOKEN}"})
    assert error_of(wrong_method, 400, "GraphMethodException")["error_subcode"] == 33
    requests.post(f"{sandbox.url}/_sandbox/config", json={"default_login": "facebook"}, timeout=5)
    assert error_of(send(sandbox, PLAIN_TOKEN, "555", body=bad), 400, "OAuthException")
    for refused in [{"logins": {"x": "myspace"}}, {"default_login": "email"}, {"logins": ["x"]},
                    {"rate_limit": 0}, {"media_rate_limit": "fast"}]:
        assert requests.post(f"{sandbox.url}/_sandbox/config", json=refused, timeout=5).status_code == 400


def test_rate_limit_overrides_every_account_and_null_restores_meta(sandbox: Server) -> None:
    changed = requests.post(f"{sandbox.url}/_sandbox/config", json={"rate_limit": 7, "media_rate_limit": 3},
                            timeout=5).json()
    assert (changed["rate_limit"], changed["media_rate_limit"]) == (7, 3)
    send(sandbox, IG_TOKEN, IG_ACCOUNT)
    send(sandbox, PAGE_TOKEN, PAGE_ACCOUNT)
    by_account = sandbox.get("/_sandbox/stats")["by_account"]
    assert by_account[IG_ACCOUNT]["budgets"] == by_account[PAGE_ACCOUNT]["budgets"] == {"text": 7, "media": 3}
    requests.post(f"{sandbox.url}/_sandbox/config", json={"rate_limit": None, "media_rate_limit": None}, timeout=5)
    send(sandbox, PAGE_TOKEN, PAGE_ACCOUNT)
    assert sandbox.get("/_sandbox/stats")["by_account"][PAGE_ACCOUNT]["budgets"] == {"text": 300, "media": 10}


async def _burst(tokens_and_bodies: list[tuple[str, str, dict]]) -> list[int]:
    """Fire every request at once at an in-process sandbox; the statuses, in order."""
    config = SandboxConfig(tokens=[IG_TOKEN, PAGE_TOKEN])
    async with TestServer(create_app(config)) as server, ClientSession() as session:
        async def one(token: str, account: str, body: dict) -> int:
            async with session.post(server.make_url(f"/{VERSION}/{account}/messages"), json=body,
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                return response.status
        return list(await asyncio.gather(*(one(*request) for request in tokens_and_bodies)))


def test_meta_budgets_per_login_kind_in_a_burst() -> None:
    text = {"recipient": {"id": "r"}, "message": {"text": "hi"}}
    video = {"recipient": {"id": "r"}, "message": {"attachment": {"type": "video",
                                                                   "payload": {"url": "https://v.example/a.mp4"}}}}
    image = {"recipient": {"id": "r"}, "message": {"attachment": {"type": "image",
                                                                   "payload": {"url": "https://i.example/a.gif"}}}}
    statuses = asyncio.run(_burst([(PAGE_TOKEN, PAGE_ACCOUNT, text)] * 300))
    assert statuses == [200] * 300  # Facebook Login: 300 text-class calls in one second are fine
    statuses = asyncio.run(_burst([(IG_TOKEN, IG_ACCOUNT, text)] * 300))
    # Instagram Login: 100 per second; the bucket refills while the burst is served, hence the range
    assert 100 <= statuses.count(200) < 300 and set(statuses) == {200, 429}
    statuses = asyncio.run(_burst([(PAGE_TOKEN, PAGE_ACCOUNT, video)] * 40 + [(PAGE_TOKEN, PAGE_ACCOUNT, image)] * 40))
    videos, images = statuses[:40], statuses[40:]
    assert 10 <= videos.count(200) < 40  # audio/video: 10 per second for both login kinds
    assert images == [200] * 40  # images ride in the text class


# --- 2. error bodies per host and code ----------------------------------------------------------------------

@pytest.mark.parametrize("recipient,status,transient", [
    ("ERR_10_2534022", 403, False),  # outside the 24-hour window
    ("ERR_10_2018065", 403, False),
    ("ERR_200_1545041", 403, False),
    ("ERR_100_2018001", 400, False),
    ("ERR_190_463", 400, False),
    ("ERR_4", 400, True),  # Graph-wide throttles keep Graph's 400; Meta's samples mark #4 transient
    ("ERR_17", 400, False),
    ("ERR_613_2534040", 429, False),  # messaging and business-use-case throttles: 429
    ("ERR_80002", 429, False),
    ("ERR_613_2018338", 400, False),  # tag misuse is a refusal, not a limit
    ("ERR_2", 500, True),
    ("ERR_551_1545041", 400, False),
])
def test_status_type_and_fbtrace_per_code(sandbox: Server, recipient: str, status: int, transient: bool) -> None:
    for token, account, error_type in [(IG_TOKEN, IG_ACCOUNT, "IGApiException"),
                                       (PAGE_TOKEN, PAGE_ACCOUNT, "OAuthException")]:
        error = error_of(send(sandbox, token, account, recipient), status, error_type)
        code, _, subcode = recipient.removeprefix("ERR_").partition("_")
        assert (error["code"], error.get("error_subcode")) == (int(code), int(subcode) if subcode else None)
        assert error.get("is_transient", False) is transient and error["message"]


def test_token_errors_are_typed_by_the_tokens_login_kind(sandbox: Server) -> None:
    assert error_of(send(sandbox, "IGQunknown", "me"), 400, "IGApiException")["code"] == 190
    assert error_of(send(sandbox, "EAAunknown", "me"), 400, "OAuthException")["code"] == 190


# --- 3. routes other than the Send API ----------------------------------------------------------------------

@pytest.mark.parametrize("method,path,code,subcode,words", [
    ("GET", f"/{VERSION}/{IG_ACCOUNT}/messages", 100, 33, f"Unsupported get request. Object with ID '{IG_ACCOUNT}'"),
    ("DELETE", f"/{VERSION}/me/messages", 100, 33, "Unsupported delete request. Object with ID 'me'"),
    ("PUT", f"/{VERSION}/me/messages", 100, 33, "Unsupported put request"),
    ("GET", "/", 100, 33, "Unsupported get request"),
    ("GET", f"/{VERSION}/me", 100, 33, "Object with ID 'me'"),
    ("POST", f"/{VERSION}/me/conversations_x", 2500, None, "Unknown path components: /conversations_x"),
    ("POST", f"/{VERSION}/me/messages/extra", 2500, None, "Unknown path components: /messages/extra"),
    ("POST", "/latest/me/messages", 2500, None, "Unknown path components: /me/messages"),
    ("POST", f"/{VERSION}/a-b/messages", 803, None, "(#803) Some of the aliases you requested do not exist: a-b"),
])
def test_other_routes_answer_graph_errors(sandbox: Server, method: str, path: str, code: int,
                                          subcode: int | None, words: str) -> None:
    for token, error_type in [(IG_TOKEN, "IGApiException"),
                              (PAGE_TOKEN, "GraphMethodException" if subcode == 33 else "OAuthException")]:
        answer = requests.request(method, sandbox.url + path, headers={"Authorization": f"Bearer {token}"},
                                  json={"recipient": {"id": "r"}, "message": {"text": "x"}}, timeout=5)
        error = error_of(answer, 400, error_type)
        assert (error["code"], error.get("error_subcode")) == (code, subcode) and words in error["message"]
    assert sandbox.messages() == []


def test_an_unversioned_call_is_served_like_meta_with_the_apps_version(sandbox: Server) -> None:
    answer = requests.post(f"{sandbox.url}/me/messages", headers={"Authorization": f"Bearer {IG_TOKEN}"},
                           json={"recipient": {"id": "r"}, "message": {"text": "x"}}, timeout=5)
    assert answer.status_code == 200 and answer.json()["message_id"]
    [seen] = sandbox.messages()
    assert (seen["version"], seen["served_version"], seen["path"]) == (None, DEFAULT_APP_VERSION, "/me/messages")


def test_unknown_sandbox_endpoints_answer_json(sandbox: Server) -> None:
    for method, path in [("POST", "/_sandbox/messages"), ("GET", "/_sandbox/nothing"), ("PUT", "/_sandbox/faults")]:
        answer = requests.request(method, sandbox.url + path, timeout=5)
        assert answer.status_code == 404 and answer.json()["ok"] is False


# --- 4. faults: per recipient, per account, per app ---------------------------------------------------------

@pytest.mark.parametrize("refusal,code,subcode,status", [
    ("not_receiving", 200, 1545041, 403), ("not_app_role", 200, 2018028, 403),
    ("outside_window", 10, 2018065, 403), ("unavailable", 551, 1545041, 400),
])
def test_a_recipient_refusal_answers_every_message_to_that_person(sandbox: Server, refusal: str, code: int,
                                                                   subcode: int, status: int) -> None:
    assert faults(sandbox, {"recipient": "nope", "refusal": refusal})["sticky"] is True
    for _ in range(3):
        error = error_of(send(sandbox, IG_TOKEN, IG_ACCOUNT, "nope"), status, "IGApiException")
        assert (error["code"], error["error_subcode"]) == (code, subcode)
    error = error_of(send(sandbox, PAGE_TOKEN, PAGE_ACCOUNT, "nope"), status, "OAuthException")
    assert error["code"] == code
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT, "someone-else").status_code == 200  # the account is fine
    shown = sandbox.get("/_sandbox/faults")
    assert shown["recipients"]["nope"]["sticky"]["code"] == code and shown["refusals"][refusal]["message"]
    requests.delete(f"{sandbox.url}/_sandbox/faults", params={"recipient": "nope"}, timeout=5).raise_for_status()
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT, "nope").status_code == 200


def test_a_refusal_can_be_spelled_out(sandbox: Server) -> None:
    faults(sandbox, {"recipient": "gone", "refusal": {"code": 10, "subcode": 2018108}})
    for _ in range(2):
        assert error_of(send(sandbox, IG_TOKEN, IG_ACCOUNT, "gone"), 403, "IGApiException")["error_subcode"] == 2018108


@pytest.mark.parametrize("spec,code,subcode,message,status", [
    ("unsupported_post", 100, None, "Unsupported request - method type: post", 400),
    ("invalid_appsecret_proof", 100, None, "Invalid appsecret_proof provided in the API argument", 400),
    ({"code": 2, "message": "(#2) The app does not have permission to send to this account"}, 2, None,
     "(#2) The app does not have permission to send to this account", 500),
    ({"code": 200, "subcode": 2534041}, 200, 2534041, "(#200) The account owner has disabled access", 403),
])
def test_an_account_error_answers_every_send_of_that_account(sandbox: Server, spec, code: int,
                                                             subcode: int | None, message: str, status: int) -> None:
    faults(sandbox, {"account": IG_ACCOUNT, "error": spec})
    for recipient in ("a", "b", "c"):
        error = error_of(send(sandbox, IG_TOKEN, IG_ACCOUNT, recipient), status, "IGApiException")
        assert (error["code"], error.get("error_subcode")) == (code, subcode)
        assert error["message"].startswith(message)
    assert send(sandbox, PAGE_TOKEN, PAGE_ACCOUNT).status_code == 200  # only that account
    assert sandbox.get("/_sandbox/faults")["accounts"][IG_ACCOUNT]["code"] == code
    requests.delete(f"{sandbox.url}/_sandbox/faults", params={"account": IG_ACCOUNT}, timeout=5).raise_for_status()
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT).status_code == 200
    assert [m["account"] for m in sandbox.messages()] == [PAGE_ACCOUNT, IG_ACCOUNT]


def test_an_app_limit_answers_code_4_for_its_accounts_for_n_seconds(sandbox: Server) -> None:
    faults(sandbox, {"app": {"seconds": 1.5, "accounts": [IG_ACCOUNT, PAGE_ACCOUNT]}})
    for token, account, error_type in [(IG_TOKEN, IG_ACCOUNT, "IGApiException"),
                                       (PAGE_TOKEN, PAGE_ACCOUNT, "OAuthException")]:
        answer = send(sandbox, token, account)
        error = error_of(answer, 400, error_type)
        assert (error["code"], error["message"], error["is_transient"]) == (
            4, "(#4) Application request limit reached", True)
        assert 1 <= int(answer.headers["Retry-After"]) <= 2
        assert json.loads(answer.headers["X-App-Usage"]) == {"call_count": 100, "total_time": 100,
                                                             "total_cputime": 100}
        assert account in json.loads(answer.headers["X-Business-Use-Case-Usage"])
    assert send(sandbox, PLAIN_TOKEN, PLAIN_ACCOUNT).status_code == 200  # another app
    [app] = sandbox.get("/_sandbox/faults")["apps"]
    assert app["accounts"] == sorted([IG_ACCOUNT, PAGE_ACCOUNT]) and 1 <= app["seconds_left"] <= 2
    stats = sandbox.get("/_sandbox/stats")
    assert stats["errors"]["4"] == 2 and stats["throttled"] == 2
    wait_until(lambda: sandbox.get("/_sandbox/faults")["apps"] == [], timeout=5)  # the limit runs out
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT).status_code == 200
    assert sandbox.get("/_sandbox/faults")["apps"] == []


def test_by_default_the_whole_sandbox_is_one_app(sandbox: Server) -> None:
    faults(sandbox, {"app": {"seconds": 30}})
    for token, account in [(IG_TOKEN, IG_ACCOUNT), (PAGE_TOKEN, PAGE_ACCOUNT), (PLAIN_TOKEN, "me")]:
        assert send(sandbox, token, account).json()["error"]["code"] == 4
    requests.delete(f"{sandbox.url}/_sandbox/faults", params={"app": "1"}, timeout=5).raise_for_status()
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT).status_code == 200
