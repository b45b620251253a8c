"""The error taxonomy code by code, the retry and usage policies, the Graph client's wire format (with
``responses``), the account registry and the token redaction filter."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.accounts import DEFAULT_API_VERSION, Account, AccountError, load_accounts
from workers.errors import Outcome, classify_error, classify_transport
from workers.graph import GraphClient
from workers.logs import _AFTER_MARKER, _TOKEN_SHAPED, RedactTokens, redact
from workers.retry import RetryPolicy, throttle_wait
from workers.usage import Usage, read_usage, retry_after


def graph_error(code, subcode=None, **extra):
    error = {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "AbC", **extra}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


T, TH, P, AB, U = Outcome.TRANSIENT, Outcome.THROTTLED, Outcome.PERMANENT, Outcome.ACCOUNT_BROKEN, Outcome.UNKNOWN
TABLE = [
    (500, 1, None, T), (500, 2, None, T), (400, 1, 1357046, U),
    *[(status, code, None, TH) for code in (4, 17, 32, 341, 613, 80001, 80002, 80006) for status in (400, 429)],
    (400, 613, 2534040, TH), (400, 613, 2018338, P),
    *[(400, 100, sub, P) for sub in (2018001, 2534014, 2534015, 2018008, 2018047, 2018074, 2018109, 2018294, 2534025)],
    (400, 100, None, P),
    (400, 10, 2534022, P), (400, 10, 2018278, P), (400, 10, 2018108, P), (400, 551, None, P), (400, 551, 1545041, P),
    (400, 200, 2534041, AB), (403, 10, None, P), (403, 200, None, P), (403, 230, None, P), (403, 299, None, P),
    (403, 200, 1545041, P), (400, 200, 2018028, P), (400, 10, 2018065, P),
    *[(400, 190, sub, AB) for sub in (463, 467, 458, 459, 460, 464, 492, None)],
    (400, 368, None, AB), (400, 10, 1893063, AB), (400, 999, 2534068, P),
]


@pytest.mark.parametrize("status,code,subcode,outcome", TABLE)
def test_graph_codes(status, code, subcode, outcome) -> None:
    verdict = classify_error(status, graph_error(code, subcode))
    assert verdict.outcome is outcome
    assert verdict.code == code and verdict.subcode == subcode and verdict.fbtrace_id == "AbC"
    assert verdict.error()["class"] == outcome.value


def test_unknown_codes_are_bounded_transient_and_bodies_without_errors_are_transient() -> None:
    odd = classify_error(400, graph_error(99999))
    assert odd.outcome is T and odd.bounded
    assert classify_error(502, None).outcome is T and not classify_error(502, None).bounded
    assert classify_error(400, graph_error(77777, is_transient=True)).outcome is T
    assert classify_error(200, {"weird": True}).bounded


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_transport_before_sending_is_transient() -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"http://127.0.0.1:{_closed_port()}/x", timeout=2)
    assert classify_transport(caught.value).outcome is T
    assert classify_transport(requests.ConnectTimeout()).outcome is T


def test_transport_after_sending_is_unknown() -> None:
    assert classify_transport(requests.ReadTimeout()).outcome is U
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def accept_read_close() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=accept_read_close)
    thread.start()
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"http://127.0.0.1:{server.getsockname()[1]}/x", data="hi", timeout=5)
    thread.join()
    server.close()
    assert classify_transport(caught.value).outcome is U


def test_usage_headers() -> None:
    headers = {"x-app-usage": json.dumps({"call_count": 12, "total_time": 85, "total_cputime": 3}),
               "X-Business-Use-Case-Usage": json.dumps({"1784": [{"type": "instagram", "call_count": 40,
                                                                  "total_time": 10, "total_cputime": 5,
                                                                  "estimated_time_to_regain_access": 3}]})}
    usage = read_usage(headers)
    assert usage.percent == 85 and usage.regain_seconds == 180
    assert read_usage({"X-App-Usage": "{not json", "X-Business-Use-Case-Usage": "[]"}) == Usage()
    assert [Usage(p).factor for p in (0, 80, 90, 100)] == [1.0, 1.0, 0.5, 0.1]
    assert retry_after({"Retry-After": "7"}) == 7 and retry_after({"retry-after": "soon"}) == 0
    assert retry_after({}) == 0


def test_backoff_is_jittered_and_capped() -> None:
    policy = RetryPolicy(base=1, cap=10)
    for failures in (1, 2, 3, 6):
        samples = [policy.backoff(failures) for _ in range(300)]
        assert min(samples) >= 0 and max(samples) <= min(10, 2 ** (failures - 1))
        assert len({round(s, 6) for s in samples}) > 250  # full jitter: spread out, not one value


def test_give_up_by_attempts_age_and_bounded_codes() -> None:
    policy = RetryPolicy(max_attempts=5, max_age=60)
    assert policy.give_up(4, 10) is None
    assert "5 failed attempts" in policy.give_up(5, 10)
    assert "older than 60" in policy.give_up(1, 61)
    assert policy.give_up(2, 1, bounded=True) is None and policy.give_up(3, 1, bounded=True)
    assert throttle_wait(2, 180) == 180 and throttle_wait(0, 0) == 30 and throttle_wait(5, 0) == 5


def account(login: str, secret: str | None = None) -> Account:
    return Account(name="a", id="1784", login=login, graph_url="https://graph.example.com", api_version="v25.0",
                   token="IGQsecret-token-value", app_secret=secret)


@responses.activate
def test_instagram_login_posts_json_with_a_bearer_token() -> None:
    responses.post("https://graph.example.com/v25.0/1784/messages", json={"recipient_id": "r", "message_id": "m"},
                   headers={"X-App-Usage": "{}"})
    answer = GraphClient().send(account("instagram"), {"recipient": {"id": "r"}, "message": {"text": "hi"}})
    call = responses.calls[0].request
    assert call.headers["Authorization"] == "Bearer IGQsecret-token-value"
    assert call.headers["Content-Type"] == "application/json"
    assert json.loads(call.body) == {"recipient": {"id": "r"}, "message": {"text": "hi"}}
    assert "IGQsecret" not in call.url and "appsecret_proof" not in call.url
    assert answer.status == 200 and answer.body["message_id"] == "m" and "X-App-Usage" in answer.headers


@responses.activate
def test_facebook_login_posts_the_seed_form_fields_and_appsecret_proof() -> None:
    responses.post("https://graph.example.com/v25.0/1784/messages", body="not json", status=502)
    answer = GraphClient().send(account("facebook", secret="s3cret"),
                                {"recipient": {"id": "r"}, "sender_action": "react",
                                 "payload": {"message_id": "m", "reaction": "love"}})
    call = responses.calls[0].request
    form = {k: v[0] for k, v in parse_qs(call.body).items()}
    assert json.loads(form["recipient"]) == {"id": "r"} and form["sender_action"] == "react"
    assert json.loads(form["payload"]) == {"message_id": "m", "reaction": "love"}
    proof = parse_qs(urlsplit(call.url).query)["appsecret_proof"][0]
    assert proof == hmac.new(b"s3cret", b"IGQsecret-token-value", hashlib.sha256).hexdigest()
    assert answer.status == 502 and answer.body is None


def test_accounts_from_env_and_file(tmp_path) -> None:
    assert load_accounts({}) == {}
    default = load_accounts({"IGSEND_ACCESS_TOKEN": "tok-default-123"})["default"]
    assert (default.id, default.login, default.messages_url) == (
        "me", "instagram", f"https://graph.instagram.com/{DEFAULT_API_VERSION}/me/messages")
    page = load_accounts({"IGSEND_ACCESS_TOKEN": "t", "IGSEND_LOGIN": "facebook", "IGSEND_ACCOUNT_ID": "99",
                          "IGSEND_API_VERSION": "v26.0"})["default"]
    assert page.messages_url == "https://graph.facebook.com/v26.0/99/messages"
    path = tmp_path / "accounts.toml"
    path.write_text('[accounts.shop]\nid = "1"\nlogin = "facebook"\ntoken_env = "SHOP"\n'
                    '[accounts.shop.limits]\ntext_per_second = 50\nmedia_per_second = 2\n')
    accounts = load_accounts({"IGSEND_ACCOUNTS_FILE": str(path), "SHOP": "shop-token-xyz"})
    assert set(accounts) == {"shop"}
    assert accounts["shop"].rate("text") == 50 and accounts["shop"].rate("media") == 2
    assert "shop-token-xyz" not in repr(accounts["shop"])
    with pytest.raises(AccountError, match="login must be"):
        load_accounts({"IGSEND_ACCESS_TOKEN": "t", "IGSEND_LOGIN": "myspace"})
    path.write_text('token = "leaky-token-value" [[[')
    with pytest.raises(AccountError) as caught:
        load_accounts({"IGSEND_ACCOUNTS_FILE": str(path)})
    assert "leaky-token-value" not in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("authorization: BEARER\tabc.def-1234", "authorization: BEARER\t[redacted]"),
    # (?i) folds as str.casefold(): a long s and a Kelvin sign still name the parameter
    ("GET /x?acce\u017f\u017f_to\u212aen=abc123&y=1", "GET /x?acce\u017f\u017f_to\u212aen=[redacted]&y=1"),
    ("debug INPUT_TOKEN=abc123", "debug INPUT_TOKEN=[redacted]"),
    ("IGQ" + "w" * 30 + " and IGA" + "v" * 30, "[redacted] and [redacted]"),
    ("send job=0123 account=IG-shop kind=text outcome=delivered", "send job=0123 account=IG-shop kind=text "
                                                                   "outcome=delivered"),
])
def test_redaction_whatever_the_case(text: str, expected: str) -> None:
    assert redact(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Bearer ", "bEaReR\n", "access_token=", "Input_Token=", "acce\u017f\u017f_to\u212aen=",
                                 "EAA", "IGQ", "IGA", "IG", "x" * 20, "&", " ", "\u0130"]) | st.text(), max_size=8)
       .map("".join))
def test_redaction_skips_no_text_the_patterns_would_match(text: str) -> None:
    # redact() runs each pattern only on text holding its literal part: the same result as running both always
    assert redact(text) == _TOKEN_SHAPED.sub("[redacted]", _AFTER_MARKER.sub(r"\1[redacted]", text))


def test_redaction() -> None:
    assert redact("Authorization: Bearer abc.def-1234") == "Authorization: Bearer [redacted]"
    assert redact("GET /x?access_token=EAAB123&y=1") == "GET /x?access_token=[redacted]&y=1"
    page_token = "EAAGm0PX4ZCpsBA" + "x" * 24  # shaped like a Page token (built here so no token-like literal)
    assert redact(f"token {page_token} end") == "token [redacted] end"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokens(["plain-secret-value"]))
    logger = logging.getLogger("igsend.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("sent with %s", "plain-secret-value")
    try:
        raise RuntimeError("boom plain-secret-value")
    except RuntimeError:
        logger.exception("failed")
    assert "plain-secret-value" not in stream.getvalue()
    assert stream.getvalue().count("[redacted]") == 3  # the message, the traceback line, the exception


def test_json_log_line_per_attempt(caplog) -> None:
    from types import SimpleNamespace

    from workers.errors import Verdict
    from workers.tasks import _log_attempt

    ctx = SimpleNamespace(settings=SimpleNamespace(log_format="json"))
    message = {"account": "shop", "kind": "text"}
    with caplog.at_level(logging.INFO, logger="igsend.send"):
        _log_attempt(ctx, "job-1", message, 2, Verdict(Outcome.PERMANENT, "no user", 400, 100, 2018001), 0.1234)
    line = json.loads(caplog.records[-1].getMessage())
    assert line == {"event": "send_attempt", "job_id": "job-1", "account": "shop", "kind": "text", "attempt": 2,
                    "status": "permanent", "http_status": 400, "graph_code": 100, "graph_subcode": 2018001,
                    "latency_ms": 123.4}
