"""The sandbox's Conversations API (what it accepted, the 20 most recent messages, 2 calls/s per account) and its
``drop`` fault (the connection closes before anything is accepted), in-process like tests/test_sandbox.py."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests

from sandbox import SandboxConfig
from tests.test_sandbox import VERSION, Server, serve

TOKEN = "IGQWRconv" + "c" * 30
ACCOUNT = "17841400000000077"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve(SandboxConfig(tokens=[TOKEN], seed=1)) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server: Server) -> None:
    requests.delete(f"{server.url}/_sandbox/messages", timeout=5).raise_for_status()
    time.sleep(1.0)  # a full Conversations API budget for each test


def send(server: Server, recipient: str, text: str | None = "hi", **body: object) -> requests.Response:
    message = {"recipient": {"id": recipient}, **({"message": {"text": text}} if text is not None else {}), **body}
    return requests.post(f"{server.url}/{VERSION}/{ACCOUNT}/messages", json=message, headers=AUTH, timeout=5)


def get(server: Server, path: str, **params: str) -> requests.Response:
    return requests.get(f"{server.url}/{VERSION}/{path}", params=params, headers=AUTH, timeout=5)


def conversation_of(server: Server, recipient: str) -> str:
    [thread] = get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id=recipient).json()["data"]
    return str(thread["id"])


def test_a_conversation_shows_what_the_business_sent_newest_first(server: Server) -> None:
    first = send(server, "5550001", "hello").json()["message_id"]
    second = send(server, "5550001", "how can we help?").json()["message_id"]
    send(server, "5550001", None, sender_action="typing_on")  # a sender action creates no message
    send(server, "5550002", "someone else")
    listed = get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id="5550001")
    assert listed.status_code == 200
    [thread] = listed.json()["data"]
    assert set(thread) == {"id", "updated_time"} and ISO.fullmatch(thread["updated_time"])
    everyone = get(server, f"{ACCOUNT}/conversations", platform="instagram").json()["data"]
    assert len(everyone) == 2 and everyone[1]["id"] == thread["id"]  # most recently updated first
    time.sleep(1.0)

    ids = get(server, thread["id"], fields="messages").json()
    assert ids["id"] == thread["id"]
    assert [m["id"] for m in ids["messages"]["data"]] == [second, first]
    assert set(ids["messages"]["data"][0]) == {"id", "created_time"}
    details = get(server, thread["id"], fields="messages{id,created_time,from,to,message}").json()
    newest = details["messages"]["data"][0]
    assert newest["message"] == "how can we help?" and ISO.fullmatch(newest["created_time"])
    assert newest["from"]["id"] == ACCOUNT and newest["to"]["data"][0]["id"] == "5550001"
    time.sleep(1.0)
    one = get(server, first, fields="id,created_time,from,to,message").json()
    assert (one["id"], one["message"], one["from"]["id"]) == (first, "hello", ACCOUNT)
    assert set(get(server, first).json()) == {"id", "created_time"}


def test_nobody_there_is_an_empty_list_and_platform_is_required(server: Server) -> None:
    assert get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id="nobody").json() == {"data": []}
    refused = get(server, f"{ACCOUNT}/conversations", user_id="nobody")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 100
    time.sleep(1.0)
    wrong_token = requests.get(f"{server.url}/{VERSION}/{ACCOUNT}/conversations", params={"platform": "instagram"},
                               headers={"Authorization": "Bearer IGQnope"}, timeout=5)
    assert wrong_token.json()["error"]["code"] == 190
    assert get(server, "me").json()["error"]["code"] == 100  # still no such node


def test_only_the_20_most_recent_messages_are_shown_or_readable(server: Server) -> None:
    sent = [send(server, "5550003", f"message {i}").json()["message_id"] for i in range(25)]
    thread = conversation_of(server, "5550003")
    shown = get(server, thread, fields="messages{id,message}").json()["messages"]["data"]
    assert [m["id"] for m in shown] == sent[::-1][:20] and shown[0]["message"] == "message 24"
    time.sleep(1.0)
    assert get(server, sent[5]).status_code == 200
    too_old = get(server, sent[4])
    assert too_old.status_code == 400 and "20 most recent" in too_old.json()["error"]["message"]


def test_the_conversations_api_allows_2_calls_per_second_per_account(server: Server) -> None:
    send(server, "5550004")
    answers = [get(server, f"{ACCOUNT}/conversations", platform="instagram") for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    throttled = answers[2]
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == 613
    assert int(throttled.headers["Retry-After"]) >= 1
    assert send(server, "5550004").status_code == 200  # the Send API's budget is another one
    time.sleep(0.6)
    assert get(server, f"{ACCOUNT}/conversations", platform="instagram").status_code == 200


def test_a_dropped_connection_accepts_nothing_a_hang_accepts_and_loses_the_answer(server: Server) -> None:
    faults = {"recipient": "5550005", "faults": [{"drop": True}, {"hang": True}]}
    requests.post(f"{server.url}/_sandbox/faults", json=faults, timeout=5).raise_for_status()
    shown = requests.get(f"{server.url}/_sandbox/faults", timeout=5).json()["recipients"]["5550005"]["queued"]
    assert shown == [{"drop": True}, {"hang": True}]
    with pytest.raises(requests.ConnectionError):
        send(server, "5550005", "dropped")
    assert requests.get(f"{server.url}/_sandbox/messages", timeout=5).json()["messages"] == []
    assert get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id="5550005").json() == {"data": []}
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        send(server, "5550005", "hung")
    time.sleep(0.6)
    thread = conversation_of(server, "5550005")
    [message] = get(server, thread, fields="messages{message}").json()["messages"]["data"]
    assert message["message"] == "hung"


def test_drop_is_a_fault_for_recipients_only(server: Server) -> None:
    refused = requests.post(f"{server.url}/_sandbox/faults", json={"account": ACCOUNT, "error": {"drop": True}},
                            timeout=5)
    assert refused.status_code == 400 and "integer 'code'" in refused.json()["error"]


def test_an_account_can_be_refused_the_conversations_api_and_still_send(server: Server) -> None:
    fault = {"account": ACCOUNT, "conversations": "missing_permission"}
    requests.post(f"{server.url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()
    assert requests.get(f"{server.url}/_sandbox/faults", timeout=5).json()["conversations"][ACCOUNT]["code"] == 10
    assert send(server, "5550006").status_code == 200
    refused = get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id="5550006")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == 10
    requests.delete(f"{server.url}/_sandbox/faults", params={"account": ACCOUNT}, timeout=5).raise_for_status()
    assert get(server, f"{ACCOUNT}/conversations", platform="instagram", user_id="5550006").status_code == 200
