"""The sandbox speaks the Send API as Meta documents it: the seed's request shapes, tokens, errors, limits."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests

TOKEN = "sandbox-test-token"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=[TOKEN], rate_limit=5, media_rate_limit=2,
                            log_path=tmp_path_factory.mktemp("sb") / "sandbox.log")
    yield service.url
    service.stop()


@pytest.fixture(autouse=True)
def reset(sandbox):
    requests.delete(f"{sandbox}/_sandbox/messages", timeout=5)
    requests.delete(f"{sandbox}/_sandbox/faults", timeout=5)
    requests.post(f"{sandbox}/_sandbox/config", json={"rate_limit": 5, "media_rate_limit": 2, "latency_ms": 0,
                                                      "error_rate": 0}, timeout=5)


def post(sandbox, body, *, token=TOKEN, account="17841400000000000", version="v25.0"):
    return requests.post(f"{sandbox}/{version}/{account}/messages", json=body,
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_the_seeds_form_requests_work_with_a_query_token(sandbox) -> None:
    url = f"{sandbox}/v25.0/me/messages?access_token={TOKEN}"
    text = requests.post(url, data='recipient={"id":"IGSID"}&message={"text":"TEXT-OR-LINK"}',
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert text.status_code == 200 and text.json()["recipient_id"] == "IGSID" and text.json()["message_id"]
    unreact = requests.post(url, data='recipient={"id":"IGSID"}&sender_action="unreact"&payload={"message_id":"M"}',
                            headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert unreact.json() == {"recipient_id": "IGSID"}
    seen = requests.get(f"{sandbox}/_sandbox/messages", timeout=5).json()["messages"]
    assert [m["token_placement"] for m in seen] == ["query", "query"]
    assert seen[1]["body"] == {"recipient": {"id": "IGSID"}, "sender_action": "unreact", "payload": {"message_id": "M"}}
    assert TOKEN not in json.dumps(seen)


def test_json_and_fresh_ids(sandbox) -> None:
    ids = {post(sandbox, {"recipient": {"id": "r"}, "message": {"text": "hi"}}).json()["message_id"] for _ in range(4)}
    assert len(ids) == 4


@pytest.mark.parametrize("body,subcode", [
    ({"message": {"text": "hi"}}, 2018001),
    ({"recipient": {"id": "r"}, "message": {"text": "é" * 501}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"text": ""}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"text": "a", "attachment": {"type": "like_heart"}}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"attachment": {"type": "hologram"}}}, 2534015),
    ({"recipient": {"id": "r"}, "message": {"attachment": {"type": "image", "payload": {"url": "ftp://x"}}}}, 2018047),
    ({"recipient": {"id": "r"}, "sender_action": "react", "payload": {"reaction": "love"}}, 2534015),
])
def test_invalid_parameters_answer_code_100(sandbox, body, subcode) -> None:
    answer = post(sandbox, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 100 and error["error_subcode"] == subcode and error["type"] == "IGApiException"
    assert error["fbtrace_id"]


def test_exactly_1000_bytes_is_fine(sandbox) -> None:
    assert post(sandbox, {"recipient": {"id": "r"}, "message": {"text": "é" * 500}}).status_code == 200


def test_unknown_tokens_and_bad_versions(sandbox) -> None:
    error = post(sandbox, {"recipient": {"id": "r"}, "message": {"text": "x"}}, token="nope").json()["error"]
    assert error["code"] == 190 and "access token" in error["message"]
    assert post(sandbox, {"recipient": {"id": "r"}, "message": {"text": "x"}}, version="latest").status_code == 400


def test_per_account_per_class_limits_with_usage_headers(sandbox) -> None:
    answers = [post(sandbox, {"recipient": {"id": "r"}, "message": {"text": f"{i}"}}) for i in range(8)]
    accepted = [a for a in answers if a.status_code == 200]
    throttled = [a for a in answers if a.status_code != 200]
    assert 5 <= len(accepted) <= 6 and throttled
    assert all(a.json()["error"]["code"] == 613 and int(a.headers["Retry-After"]) >= 1 for a in throttled)
    usage = json.loads(throttled[0].headers["X-Business-Use-Case-Usage"])
    assert usage["17841400000000000"][0]["call_count"] == 100
    assert json.loads(accepted[0].headers["X-App-Usage"])["call_count"] < 100
    # another account and the media class have budgets of their own
    assert post(sandbox, {"recipient": {"id": "r"}, "message": {"text": "x"}}, account="999").status_code == 200
    video = {"recipient": {"id": "r"}, "message": {"attachment": {"type": "video", "payload": {"url": "https://v"}}}}
    assert [post(sandbox, video, account="777").status_code for _ in range(3)] == [200, 200, 429]
    assert requests.get(f"{sandbox}/_sandbox/stats", timeout=5).json()["throttled"] == len(throttled) + 1


def test_faults_magic_ids_transient_rate_and_hang(sandbox) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "f", "faults": [
        {"code": 2, "status": 500, "is_transient": True}, {"code": 4, "retry_after": 3}]}, timeout=5)
    body = {"recipient": {"id": "f"}, "message": {"text": "x"}}
    first, second, third = (post(sandbox, body) for _ in range(3))
    assert first.status_code == 500 and first.json()["error"]["is_transient"] is True
    assert second.json()["error"]["code"] == 4 and second.headers["Retry-After"] == "3"
    assert third.status_code == 200
    magic = post(sandbox, {"recipient": {"id": "ERR_551_1545041"}, "message": {"text": "x"}}).json()["error"]
    assert (magic["code"], magic["error_subcode"]) == (551, 1545041)
    requests.post(f"{sandbox}/_sandbox/config", json={"error_rate": 1.0, "rate_limit": 1000}, timeout=5)
    assert all(post(sandbox, body).json()["error"]["code"] == 2 for _ in range(3))
    requests.post(f"{sandbox}/_sandbox/config", json={"error_rate": 0}, timeout=5)
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "h", "faults": [{"hang": True}]}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        post(sandbox, {"recipient": {"id": "h"}, "message": {"text": "lost answer"}})
    seen = requests.get(f"{sandbox}/_sandbox/messages", timeout=5).json()["messages"]
    assert seen[-1]["body"]["message"]["text"] == "lost answer"  # Meta got it; the answer never came


def test_latency_and_duplicates(sandbox) -> None:
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 200}, timeout=5)
    started = time.monotonic()
    post(sandbox, {"recipient": {"id": "d"}, "message": {"text": "same"}})
    assert time.monotonic() - started >= 0.2
    post(sandbox, {"recipient": {"id": "d"}, "message": {"text": "same"}})
    assert requests.get(f"{sandbox}/_sandbox/stats", timeout=5).json()["duplicates"] == 1


def test_appsecret_proof_when_required(tmp_path) -> None:
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=[TOKEN], log_path=tmp_path / "sb.log", extra=["--app-secret", "s3cret"])
    try:
        body = {"recipient": {"id": "r"}, "message": {"text": "x"}}
        proof = hmac.new(b"s3cret", TOKEN.encode(), hashlib.sha256).hexdigest()
        url = f"{service.url}/v25.0/me/messages"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.post(url, json=body, headers=auth, timeout=5).json()["error"]["code"] == 100
        assert requests.post(url, params={"appsecret_proof": proof}, json=body, headers=auth, timeout=5).ok
    finally:
        service.stop()
