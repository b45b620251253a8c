"""GraphClient.send against ``responses``: URL, body shape per login kind, token placement, appsecret_proof.

Instagram Login examples send a JSON body with ``Authorization: Bearer``; the seed (Facebook Login) posts form
fields holding JSON strings. The token never goes in the URL ("Graph API / Securing Requests" for
``appsecret_proof``: hex HMAC-SHA256 of the token keyed by the app secret).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from workers.accounts import Account
from workers.graph import CONNECT_TIMEOUT, READ_TIMEOUT, GraphClient, GraphResponse

IG_TOKEN = "IGQtesttoken" + "x" * 40
PAGE_TOKEN = "EAAshoptoken" + "y" * 40
APP_SECRET = "0123456789abcdef0123456789abcdef"
IG_ID = "17841400000000001"
PAGE_ID = "104000000000001"
IG_URL = f"https://graph.instagram.com/v25.0/{IG_ID}/messages"
FB_URL = f"https://graph.facebook.com/v24.0/{PAGE_ID}/messages"
OK = {"recipient_id": "1254477777772919", "message_id": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAw"}


def ig_account(app_secret: str | None = None, graph_url: str = "https://graph.instagram.com") -> Account:
    return Account(name="default", id=IG_ID, login="instagram", graph_url=graph_url, api_version="v25.0",
                   token=IG_TOKEN, app_secret=app_secret)


def fb_account(app_secret: str | None = None) -> Account:
    return Account(name="shop", id=PAGE_ID, login="facebook", graph_url="https://graph.facebook.com",
                   api_version="v24.0", token=PAGE_TOKEN, app_secret=app_secret)


@pytest.fixture
def client() -> Iterator[GraphClient]:
    graph = GraphClient()
    yield graph
    graph.session.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def _only_call(mocked: responses.RequestsMock) -> responses.Call:
    assert len(mocked.calls) == 1
    return mocked.calls[0]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- Instagram Login ----------------------------------------------------------------------------------------


def test_instagram_login_posts_json_with_bearer(client: GraphClient, mocked: responses.RequestsMock) -> None:
    mocked.post(IG_URL, json=OK)
    body = {"recipient": {"id": "1254477777772919"}, "message": {"text": "héllo ✨"}}
    result = client.send(ig_account(), body)

    request = _only_call(mocked).request
    assert request.method == "POST"
    assert urlsplit(request.url)._replace(query="").geturl() == IG_URL
    assert request.headers["Authorization"] == f"Bearer {IG_TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == body
    assert IG_TOKEN not in request.url
    assert "access_token" not in request.url
    assert _query(request.url) == {}
    assert result.status == 200
    assert result.body == OK


def test_instagram_login_react_body_is_json(client: GraphClient, mocked: responses.RequestsMock) -> None:
    mocked.post(IG_URL, json={"recipient_id": "1"})
    body = {"recipient": {"id": "1"}, "sender_action": "react", "payload": {"message_id": "m1", "reaction": "love"}}
    client.send(ig_account(), body)
    assert json.loads(_only_call(mocked).request.body) == body


def test_messages_url_uses_me_and_custom_graph_url(client: GraphClient, mocked: responses.RequestsMock) -> None:
    account = Account(name="x", id="me", login="instagram", graph_url="http://sandbox.local:8080/",
                      api_version="v26.0", token=IG_TOKEN)
    assert account.messages_url == "http://sandbox.local:8080/v26.0/me/messages"
    mocked.post("http://sandbox.local:8080/v26.0/me/messages", json=OK)
    assert client.send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}}).status == 200


# --- Facebook Login -----------------------------------------------------------------------------------------


def test_facebook_login_posts_form_fields_holding_json(client: GraphClient, mocked: responses.RequestsMock) -> None:
    mocked.post(FB_URL, json=OK)
    body = {"recipient": {"id": "1254477777772919"}, "message": {"text": "héllo ✨"},
            "messaging_type": "RESPONSE"}
    client.send(fb_account(), body)

    request = _only_call(mocked).request
    assert urlsplit(request.url)._replace(query="").geturl() == FB_URL
    assert request.headers["Authorization"] == f"Bearer {PAGE_TOKEN}"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body if isinstance(request.body, str) else request.body.decode(), strict_parsing=True)
    assert set(form) == {"recipient", "message", "messaging_type"}
    assert json.loads(form["recipient"][0]) == {"id": "1254477777772919"}
    assert json.loads(form["message"][0]) == {"text": "héllo ✨"}
    assert form["messaging_type"] == ["RESPONSE"]  # plain strings stay plain
    assert PAGE_TOKEN not in request.url
    assert "access_token" not in request.url
    assert PAGE_TOKEN not in str(request.body)


def test_facebook_login_sender_action_is_a_plain_string(client: GraphClient, mocked: responses.RequestsMock) -> None:
    mocked.post(FB_URL, json={"recipient_id": "1"})
    body = {"recipient": {"id": "1"}, "sender_action": "react", "payload": {"message_id": "m1", "reaction": "love"}}
    client.send(fb_account(), body)

    raw = _only_call(mocked).request.body
    form = parse_qs(raw if isinstance(raw, str) else raw.decode())
    assert form["sender_action"] == ["react"]
    assert json.loads(form["recipient"][0]) == {"id": "1"}
    assert json.loads(form["payload"][0]) == {"message_id": "m1", "reaction": "love"}


# --- appsecret_proof ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "url", "token"), [(ig_account, IG_URL, IG_TOKEN), (fb_account, FB_URL, PAGE_TOKEN)])
def test_appsecret_proof_is_hmac_of_the_token(client: GraphClient, mocked: responses.RequestsMock, make, url: str,
                                              token: str) -> None:
    mocked.post(url, json=OK)
    account = make(app_secret=APP_SECRET)
    client.send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}})

    expected = hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
    query = _query(_only_call(mocked).request.url)
    assert query == {"appsecret_proof": [expected]}
    assert len(expected) == 64 and all(c in "0123456789abcdef" for c in expected)
    assert account.appsecret_proof() == expected
    assert APP_SECRET not in _only_call(mocked).request.url


@pytest.mark.parametrize(("make", "url"), [(ig_account, IG_URL), (fb_account, FB_URL)])
@pytest.mark.parametrize("secret", [None, ""])
def test_no_appsecret_proof_without_a_secret(client: GraphClient, mocked: responses.RequestsMock, make, url: str,
                                             secret: str | None) -> None:
    mocked.post(url, json=OK)
    account = make(app_secret=secret)
    assert account.appsecret_proof() is None
    client.send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    assert "appsecret_proof" not in _only_call(mocked).request.url


@pytest.mark.parametrize(("make", "url"), [(ig_account, IG_URL), (fb_account, FB_URL)])
def test_the_next_post_after_a_token_is_replaced_carries_the_new_token_and_its_proof(
        client: GraphClient, mocked: responses.RequestsMock, make, url: str) -> None:
    # each account's POST is prepared once per token (GraphClient._prepared): a token file's new token must not
    # leave the old one, or its proof, on the account's next messages
    mocked.post(url, json=OK)
    old = make(app_secret=APP_SECRET)
    new = dataclasses.replace(old, token=old.token[:-4] + "zzzz")
    for account in (old, old, new, new):
        client.send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    sent = [(call.request.headers["Authorization"], _query(call.request.url)["appsecret_proof"][0])
            for call in mocked.calls]
    assert sent == [(f"Bearer {account.token}", account.appsecret_proof()) for account in (old, old, new, new)]
    assert old.appsecret_proof() != new.appsecret_proof()


def test_each_account_posts_with_its_own_token_whatever_the_order(client: GraphClient,
                                                                  mocked: responses.RequestsMock) -> None:
    mocked.post(IG_URL, json=OK)
    mocked.post(FB_URL, json=OK)
    for account in (ig_account(), fb_account(), ig_account(), fb_account()):
        client.send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    assert [(urlsplit(call.request.url).netloc, call.request.headers["Authorization"]) for call in mocked.calls] == [
        ("graph.instagram.com", f"Bearer {IG_TOKEN}"), ("graph.facebook.com", f"Bearer {PAGE_TOKEN}")] * 2


def test_a_cookie_graph_sets_never_goes_out_with_a_message(client: GraphClient,
                                                           mocked: responses.RequestsMock) -> None:
    mocked.post(IG_URL, json=OK, headers={"Set-Cookie": "datr=abc123; Path=/; Domain=.instagram.com"})
    mocked.get(f"https://graph.instagram.com/v25.0/{IG_ID}/conversations", json={"data": []},
               headers={"Set-Cookie": "sb=xyz789; Path=/; Domain=.instagram.com"})
    client.send(ig_account(), {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    client.get(ig_account(), f"{IG_ID}/conversations", {"platform": "instagram"}, deadline=5)
    client.send(ig_account(), {"recipient": {"id": "1"}, "message": {"text": "again"}})
    assert [call.request.headers.get("Cookie") for call in mocked.calls if call.request.method == "POST"] == [
        None, None]


def test_appsecret_proof_known_vector() -> None:
    # HMAC-SHA256(key="key", msg="The quick brown fox jumps over the lazy dog"), the RFC/Wikipedia example
    account = Account(name="v", id="me", login="instagram", graph_url="https://graph.instagram.com",
                      api_version="v25.0", token="The quick brown fox jumps over the lazy dog", app_secret="key")
    assert account.appsecret_proof() == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


# --- GraphResponse ------------------------------------------------------------------------------------------


def test_response_carries_status_body_and_headers(client: GraphClient, mocked: responses.RequestsMock) -> None:
    error = {"error": {"message": "Calls to this api have exceeded the rate limit.", "type": "OAuthException",
                       "code": 4, "fbtrace_id": "AbC"}}
    usage = '{"call_count":100,"total_time":10,"total_cputime":10}'
    mocked.post(IG_URL, json=error, status=429, headers={"X-App-Usage": usage, "Retry-After": "60"})
    result = client.send(ig_account(), {"recipient": {"id": "1"}, "message": {"text": "hi"}})

    assert isinstance(result, GraphResponse)
    assert result.status == 429
    assert result.body == error
    assert isinstance(result.headers, dict)
    assert result.headers["X-App-Usage"] == usage
    assert result.headers["Retry-After"] == "60"
    assert result.elapsed >= 0


@pytest.mark.parametrize(("status", "text", "content_type"), [
    (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    (500, "", "text/plain"),
    (200, "not json {", "application/json"),
])
def test_non_json_body_is_none(client: GraphClient, mocked: responses.RequestsMock, status: int, text: str,
                               content_type: str) -> None:
    mocked.post(IG_URL, body=text, status=status, content_type=content_type)
    result = client.send(ig_account(), {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    assert result.status == status
    assert result.body is None


def test_default_timeouts_are_passed(client: GraphClient, mocked: responses.RequestsMock) -> None:
    mocked.post(IG_URL, json=OK)
    client.send(ig_account(), {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    assert _only_call(mocked).request.req_kwargs["timeout"] == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert CONNECT_TIMEOUT < READ_TIMEOUT < 30  # below the broker's visibility timeout


@pytest.mark.parametrize(("make", "url"), [(ig_account, IG_URL), (fb_account, FB_URL)])
def test_custom_timeouts_are_passed(mocked: responses.RequestsMock, make, url: str) -> None:
    mocked.post(url, json=OK)
    graph = GraphClient(connect_timeout=1.5, read_timeout=7.0)
    try:
        graph.send(make(), {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    finally:
        graph.session.close()
    assert _only_call(mocked).request.req_kwargs["timeout"] == (1.5, 7.0)


_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy", "NO_PROXY",
                    "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_the_environment_is_read_per_post_only_when_it_sets_a_proxy(monkeypatch: pytest.MonkeyPatch,
                                                                    variable: str) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert GraphClient().session.trust_env is False  # nothing to read: no per-POST look-ups
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert GraphClient().session.trust_env is False  # a bypass list alone routes nothing
    monkeypatch.setenv(variable, "http://127.0.0.1:3128")
    assert GraphClient().session.trust_env is True


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_named_in_the_environment_is_still_verified_against(monkeypatch: pytest.MonkeyPatch,
                                                                       variable: str) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert GraphClient().session.verify is True  # requests' own bundle (certifi)
    monkeypatch.setenv(variable, "/etc/ssl/company-ca.pem")
    session = GraphClient().session
    assert session.trust_env is False
    assert session.verify == "/etc/ssl/company-ca.pem"


def test_a_proxy_set_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    account = ig_account(graph_url=f"http://127.0.0.1:{_closed_port()}")
    body = {"recipient": {"id": "1"}, "message": {"text": "hi"}}
    with pytest.raises(requests.ConnectionError) as direct:
        GraphClient().send(account, body, deadline=2)
    assert not isinstance(direct.value, requests.exceptions.ProxyError)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(requests.exceptions.ProxyError):  # the POST went to the proxy, as requests does by default
        GraphClient().send(account, body, deadline=2)
