"""The sandbox answers as Meta does per login kind: budgets, error types and statuses, Graph errors for every
other route, and the per-recipient, per-account and per-app faults igsend must tell apart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from sandbox import SandboxConfig, create_app
from tests.test_sandbox import ROOT, Server, start, stop

IG_TOKEN = "IGQWRtest" + "a" * 30  # Instagram Login user token
PAGE_TOKEN = "EAAtest" + "b" * 30  # Facebook Login Page token
PLAIN_TOKEN = "plain-token-1"  # neither prefix: the default login kind
IG_ACCOUNT, PAGE_ACCOUNT, PLAIN_ACCOUNT = "17841400000000011", "104000000000022", "17841400000000033"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Server]:
    server = start("--token", IG_TOKEN, "--token", PAGE_TOKEN, "--token", PLAIN_TOKEN)
    yield server
    stop(server)


@pytest.fixture(autouse=True)
def fresh(sandbox: Server) -> None:
    requests.delete(f"{sandbox.url}/_sandbox/messages", timeout=5).raise_for_status()
    requests.post(f"{sandbox.url}/_sandbox/config", timeout=5, json={
        "latency_ms": 0, "error_rate": 0, "rate_limit": None, "media_rate_limit": None, "default_login": "instagram",
        "logins": {PLAIN_ACCOUNT: None, "me": None}}).raise_for_status()


def send(sandbox: Server, token: str, account: str, recipient: str = "IGSID", body: dict | None = None,
         **kwargs) -> requests.Response:
    body = body or {"recipient": {"id": recipient}, "message": {"text": "hi"}}
    return requests.post(f"{sandbox.url}/v25.0/{account}/messages", json=body, timeout=5,
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
    form = requests.post(f"{sandbox.url}/v25.0/me/messages", params={"access_token": PAGE_TOKEN},
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
    wrong_method = requests.get(f"{sandbox.url}/v25.0/{PLAIN_ACCOUNT}/messages", timeout=5,
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


def test_cli_login_and_rate_limit_flags() -> None:
    server = start("--token", PLAIN_TOKEN, "--login", "42=facebook", "--rate-limit", "50")
    try:
        config = server.get("/_sandbox/config")
        assert config["logins"] == {"42": "facebook"} and config["rate_limit"] == 50
        assert config["media_rate_limit"] is None
        send(server, PLAIN_TOKEN, "42")
        send(server, PLAIN_TOKEN, "43")
        by_account = server.get("/_sandbox/stats")["by_account"]
        assert (by_account["42"]["login"], by_account["43"]["login"]) == ("facebook", "instagram")
        assert by_account["42"]["budgets"] == by_account["43"]["budgets"] == {"text": 50, "media": 10}
    finally:
        stop(server)
    broken = subprocess.run([sys.executable, "-m", "sandbox", "--login", "42=myspace"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert broken.returncode == 2 and "ACCOUNT=instagram" in broken.stderr


async def _burst(tokens_and_bodies: list[tuple[str, str, dict]]) -> list[int]:
    """Fire every request at once at an in-process sandbox; the statuses, in order."""
    config = SandboxConfig(tokens=[IG_TOKEN, PAGE_TOKEN])
    async with TestServer(create_app(config)) as server, ClientSession() as session:
        async def one(token: str, account: str, body: dict) -> int:
            async with session.post(server.make_url(f"/v25.0/{account}/messages"), json=body,
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
    ("GET", f"/v25.0/{IG_ACCOUNT}/messages", 100, 33, f"Unsupported get request. Object with ID '{IG_ACCOUNT}'"),
    ("DELETE", "/v25.0/me/messages", 100, 33, "Unsupported delete request. Object with ID 'me'"),
    ("PUT", "/v25.0/me/messages", 100, 33, "Unsupported put request"),
    ("GET", "/", 100, 33, "Unsupported get request"),
    ("GET", "/v25.0/me", 100, 33, "Object with ID 'me'"),
    ("POST", "/v25.0/me/conversations_x", 2500, None, "Unknown path components: /conversations_x"),
    ("POST", "/v25.0/me/messages/extra", 2500, None, "Unknown path components: /messages/extra"),
    ("POST", "/latest/me/messages", 2500, None, "Unknown path components: /me/messages"),
    ("POST", "/v25.0/a-b/messages", 803, None, "(#803) Some of the aliases you requested do not exist: a-b"),
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
    assert (seen["version"], seen["served_version"], seen["path"]) == (None, "v25.0", "/me/messages")


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
    time.sleep(1.6)
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT).status_code == 200
    assert sandbox.get("/_sandbox/faults")["apps"] == []


def test_by_default_the_whole_sandbox_is_one_app(sandbox: Server) -> None:
    faults(sandbox, {"app": {"seconds": 30}})
    for token, account in [(IG_TOKEN, IG_ACCOUNT), (PAGE_TOKEN, PAGE_ACCOUNT), (PLAIN_TOKEN, "me")]:
        assert send(sandbox, token, account).json()["error"]["code"] == 4
    requests.delete(f"{sandbox.url}/_sandbox/faults", params={"app": "1"}, timeout=5).raise_for_status()
    assert send(sandbox, IG_TOKEN, IG_ACCOUNT).status_code == 200


def test_bad_fault_specs_are_refused(sandbox: Server) -> None:
    for spec in [{"recipient": "r", "refusal": "maybe"}, {"account": IG_ACCOUNT, "error": "oops"},
                 {"account": IG_ACCOUNT, "error": {"hang": True}}, {"account": "", "error": "unsupported_post"},
                 {"app": {"seconds": 0}}, {"app": {"seconds": 5, "accounts": []}}, {"app": 5},
                 {"recipient": "r", "faults": [{"code": 2, "colour": "red"}]}, ["not", "an", "object"]]:
        answer = requests.post(f"{sandbox.url}/_sandbox/faults", json=spec, timeout=5)
        assert answer.status_code == 400 and answer.json()["ok"] is False, spec
    assert sandbox.get("/_sandbox/faults")["accounts"] == {}
