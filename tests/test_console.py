"""The operator's console (/ui) and API key scopes, through Flask's test client on a real Redis (db 1, which no
worker consumes): login and redirects, scopes (403) and rates (429), CSRF (400 and nothing changed), escaping,
the CSP header and the session cookie's flags. tests/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import re

import pytest

from igsend.core import dlq
from igsend.core.errors import ConfigurationError
from igsend.core.records import Outcomes
from producers import send
from producers.api import create_app
from producers.api_keys import parse_entry

OPERATOR = "operator-key-0123456789"
PRODUCER = "producer-key-0123456789"
READER = "reader-key-0123456789"
HTML = "<script>alert(1)</script><b>bold</b>"


@pytest.fixture
def app(private_db, monkeypatch):
    monkeypatch.setenv("IGSEND_UI_SECRET", "test-secret-" + "s" * 20)
    return create_app(api_keys=[OPERATOR, f"{PRODUCER}:send+read", f"{READER}:read@2"])


@pytest.fixture
def client(app):
    return app.test_client()


def _csrf(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


def _login(client, key: str = OPERATOR):
    token = _csrf(client.get("/ui/login").data)
    return client.post("/ui/login", data={"api_key": key, "csrf_token": token})


def _dead_letter(client_redis, text: str = "hello", account: str = "default", code: int = 100) -> str:
    """A dead letter made the way a worker makes one: a queued job, then its dead outcome."""
    job = send({"kind": "text", "recipient": "6543210987654321", "text": text, "account": account})
    error = {"code": code, "subcode": 2018001, "message": "No matching user found", "fbtrace_id": "AbCdEf123",
             "http_status": 400, "class": "permanent"}
    attempt = {"attempt": 1, "at": 1.0e9, "outcome": "permanent", "http_status": 400, "code": code,
               "subcode": 2018001, "message": "No matching user found", "fbtrace_id": "AbCdEf123"}
    client_redis.hset(f"igsend:job:{job.id}", mapping={"status": "sending", "inflight": 1})  # admitted, POSTed
    Outcomes(client_redis, record_ttl=3600).dead(job.id, "permanent: no matching user", error, attempt)
    return job.id


# --- API keys ----------------------------------------------------------------------------------------------------

def test_bad_key_entries_name_the_entry_and_the_rule() -> None:
    assert parse_entry("abc").scopes == {"send", "read", "operate"}
    key = parse_entry("abcdef:send+read@50")
    assert key.scopes == {"send", "read"} and key.rate == 50
    with pytest.raises(ConfigurationError, match=r"entry 'abc…:write'.*unknown scope 'write'"):
        parse_entry("abcdef:write")
    with pytest.raises(ConfigurationError, match=r"@N must be a positive number.*'fast'"):
        parse_entry("abcdef:send@fast")
    with pytest.raises(ConfigurationError, match=r"unknown scope ''"):
        parse_entry("abcdef:")
    with pytest.raises(ConfigurationError, match="listed twice"):
        create_app(api_keys=["same", "same:read"])


def test_a_key_without_the_scope_is_refused_with_403_naming_it(client, private_db) -> None:
    producer = {"Authorization": f"Bearer {PRODUCER}"}
    queued = client.post("/v1/messages", json={"kind": "sticker", "recipient": "1"}, headers=producer)
    assert queued.status_code == 202
    assert client.get(queued.headers["Location"], headers=producer).status_code == 200
    refused = client.get("/v1/dead-letters", headers=producer)
    assert refused.status_code == 403 and "operate" in refused.get_json()["message"]
    cancel = client.delete(queued.headers["Location"], headers=producer)
    assert cancel.status_code == 403
    assert client.get(queued.headers["Location"]).status_code == 401
    reader = client.post("/v1/messages", json={"kind": "sticker", "recipient": "1"},
                         headers={"Authorization": f"Bearer {READER}"})
    assert reader.status_code == 403 and "'send'" in reader.get_json()["message"]


def test_a_key_past_its_rate_gets_429_with_retry_after(client, private_db) -> None:
    headers = {"Authorization": f"Bearer {READER}"}
    answers = [client.get("/v1/messages/nope", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers[:2]] == [404, 404]  # 2 requests/s: two go through at once
    assert answers[2].status_code == 429
    assert int(answers[2].headers["Retry-After"]) >= 1
    # the limit is per key: the operator key is not slowed by the reader's
    assert client.get("/v1/messages/nope", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 404


def test_login_tries_from_one_address_are_slowed_down(client) -> None:
    """Someone guessing keys at /ui/login gets a few tries a minute; the right key waits out the limit too."""
    from producers.api_keys import LOGINS_PER_MINUTE

    token = _csrf(client.get("/ui/login").data)
    tries = [client.post("/ui/login", data={"api_key": f"guess-{i}", "csrf_token": token})
             for i in range(LOGINS_PER_MINUTE)]
    assert {answer.status_code for answer in tries} == {401}
    limited = client.post("/ui/login", data={"api_key": OPERATOR, "csrf_token": token})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert b"Too many login attempts" in limited.data and "Set-Cookie" not in limited.headers
    assert client.get("/ui").status_code == 302  # not logged in


def test_the_openapi_document_declares_each_operations_scope(client) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert paths["/v1/messages"]["post"]["x-igsend-scope"] == "send"
    assert paths["/v1/messages/{job_id}"]["get"]["x-igsend-scope"] == "read"
    assert paths["/v1/messages/{job_id}"]["delete"]["x-igsend-scope"] == "operate"
    assert paths["/v1/dead-letters/{job_id}/replay"]["post"]["x-igsend-scope"] == "operate"
    assert "403" in paths["/v1/dead-letters"]["get"]["responses"]
    assert "429" in paths["/v1/messages"]["post"]["responses"]


# --- console: login, session, headers ----------------------------------------------------------------------------

def test_pages_redirect_to_the_login_until_an_operate_key_logs_in(client) -> None:
    for path in ("/ui", "/ui/dead-letters", "/ui/accounts", "/ui/scheduled", "/ui/jobs/x"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/ui/login"), path
    assert _login(client, "wrong").status_code == 401
    refused = _login(client, PRODUCER)
    assert refused.status_code == 401 and b"operate" in refused.data
    assert client.get("/ui").status_code == 302
    assert _login(client).status_code == 302
    page = client.get("/ui")
    assert page.status_code == 200 and b"Workers alive" in page.data
    assert OPERATOR.encode() not in page.data


def test_session_cookie_flags_csp_and_secure_behind_tls(client) -> None:
    token = _csrf(client.get("/ui/login").data)
    answer = client.post("/ui/login", data={"api_key": OPERATOR, "csrf_token": token})
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http (igsend up on 127.0.0.1)
    assert OPERATOR not in cookie
    page = client.get("/ui/dead-letters")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    tls = client.get("/ui/login", base_url="https://console.example")
    tls_token = _csrf(tls.data)
    over_tls = client.post("/ui/login", data={"api_key": OPERATOR, "csrf_token": tls_token},
                           base_url="https://console.example")
    assert "Secure" in over_tls.headers["Set-Cookie"]


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(client, private_db) -> None:
    job_id = _dead_letter(private_db)
    _login(client)
    assert client.post(f"/ui/dead-letters/{job_id}/replay").status_code == 400
    assert client.post(f"/ui/dead-letters/{job_id}/replay", data={"csrf_token": "forged"}).status_code == 400
    assert client.post("/ui/dead-letters/purge", data={"scope": "all", "confirm": "yes"}).status_code == 400
    assert dlq.show(job_id) is not None
    # the JSON API is exempt: keys, not cookies, authenticate it
    api = client.post(f"/v1/dead-letters/{job_id}/replay", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert api.status_code == 202


def test_message_html_is_shown_as_text_and_only_on_request(client, private_db) -> None:
    job_id = _dead_letter(private_db, text=HTML)
    _login(client)
    listing = client.get("/ui/dead-letters").data
    assert job_id.encode() in listing and b"bold" not in listing  # no message text in lists
    detail = client.get(f"/ui/dead-letters/{job_id}").data
    assert b"bold" not in detail and b"AbCdEf123" in detail and b"No matching user found" in detail
    shown = client.get(f"/ui/dead-letters/{job_id}?show=text").data
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in shown
    assert b"<script>alert" not in shown and b"<b>bold" not in shown


# --- console: dead letters ---------------------------------------------------------------------------------------

def test_filter_confirm_and_purge_the_matching_dead_letters(client, private_db) -> None:
    keep = _dead_letter(private_db, account="default", code=100)
    gone = [_dead_letter(private_db, account="shop", code=10) for _ in range(3)]
    _login(client)
    page = client.get("/ui/dead-letters?account=shop").data.decode()
    assert all(job_id in page for job_id in gone) and keep not in page
    assert keep in client.get("/ui/dead-letters?code=100").data.decode()
    assert "code: must be a Graph error code" in client.get("/ui/dead-letters?code=x").data.decode()
    token = _csrf(client.get("/ui/dead-letters?account=shop").data)
    form = {"csrf_token": token, "scope": "all", "account": "shop", "reason": "", "code": "", "age": ""}
    confirm = client.post("/ui/dead-letters/purge", data=form)
    assert confirm.status_code == 200 and "Purge 3 dead letters?" in confirm.data.decode()
    assert dlq.size() == 4  # the confirmation changed nothing
    done = client.post("/ui/dead-letters/purge", data={**form, "confirm": "yes"}, follow_redirects=True)
    assert "purged 3 dead letters" in done.data.decode()
    assert [e["id"] for e in dlq.list_entries()] == [keep]


def test_pages_of_the_dlq_follow_its_index(private_db) -> None:
    ids = [_dead_letter(private_db, account="default" if i % 3 else "shop") for i in range(12)]
    first = dlq.page(dlq.Filter(), size=5)
    assert [e["id"] for e in first.entries] == ids[::-1][:5] and first.next_start == 5
    shop = dlq.page(dlq.Filter(account="shop"), size=2)
    assert [e["id"] for e in shop.entries] == [ids[9], ids[6]]
    rest = dlq.page(dlq.Filter(account="shop"), start=shop.next_start or 0, size=10)
    assert [e["id"] for e in rest.entries] == [ids[3], ids[0]] and rest.next_start is None
    assert dlq.page(dlq.Filter(older_than=3600)).entries == []


def test_the_overview_shows_what_waits_in_each_accounts_lanes(client, private_db) -> None:
    """New messages wait in their account's lanes until the dispatcher hands them out (igsend.core.lanes): the
    overview counts them as queued and says by class and priority."""
    import producers

    producers.send_many([{"kind": "text", "recipient": f"r{i}", "text": "hi", "priority": "bulk"} for i in range(3)])
    producers.send_text("r", "a reply")
    _login(client)
    page = client.get("/ui").get_data(as_text=True)
    row = page[page.index(">default<"):]
    row = row[:row.index("</tr>")]
    assert ">4" in row and "text/bulk 3" in row and "text/normal 1" in row, row


def test_the_overview_charts_each_minute_of_the_last_hour_or_day_as_svg(client, private_db) -> None:
    """Counts written the way outcomes write them (igsend.core.series) come out as lines of an SVG drawn on the
    server, with a summary readable without it; the account and the range are chosen with a plain GET form."""
    import time

    from igsend.core import series

    now = time.time()
    for name, times in (("dead", 2), ("throttled", 1)):  # each counted for the account and for every account
        for _ in range(times):
            pipe = private_db.pipeline()
            series.count(pipe, "default", name, now)
            pipe.execute()
    series.set_waiting(private_db, {"default": 7}, now)
    _login(client)
    page = client.get("/ui").get_data(as_text=True)
    charts = page[page.index('id="charts"'):]
    assert charts.count("<svg") == 3 and "<script" not in charts
    assert "delivered 0, dead 2, throttled 1 in 60 min" in charts and "waiting now 7, at most 7" in charts
    assert "Outcomes per minute: every account" in charts
    day = client.get("/ui?account=default&range=day").get_data(as_text=True)
    assert "Outcomes per minute: default" in day and "in 1440 min" in day
    assert '<option selected>default</option>' in day and '<option selected>day</option>' in day
    unknown = client.get("/ui?account=nobody&range=week").get_data(as_text=True)
    assert "Outcomes per minute: nobody" in unknown and "in 60 min" in unknown  # an unknown range falls back
    assert "delivered 0, dead 0, throttled 0" in unknown


def test_a_dead_letter_links_to_its_trace_when_a_trace_url_is_set(client, private_db, monkeypatch) -> None:
    job_id = _dead_letter(private_db)
    _login(client)
    assert "its trace" not in client.get(f"/ui/dead-letters/{job_id}").get_data(as_text=True)  # no template
    monkeypatch.setenv("IGSEND_UI_TRACE_URL", "http://jaeger.example:16686/trace/{trace_id}")
    assert "its trace" not in client.get(f"/ui/dead-letters/{job_id}").get_data(as_text=True)  # no trace kept
    private_db.hset(f"igsend:job:{job_id}", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    page = client.get(f"/ui/dead-letters/{job_id}").get_data(as_text=True)
    assert 'href="http://jaeger.example:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"' in page
    private_db.hset(f"igsend:job:{job_id}", "traceparent", '00-"><script>alert(1)</script>-x-01')
    assert "<script>alert" not in client.get(f"/ui/dead-letters/{job_id}").get_data(as_text=True)

# --- console: status callbacks -----------------------------------------------------------------------------------

def test_the_callbacks_page_shows_each_endpoint_its_failed_events_and_replays_them(client, private_db, tmp_path,
                                                                                   monkeypatch) -> None:
    import json

    from igsend.core import callbacks
    from tests.test_callbacks import SECRET

    assert client.get("/ui/callbacks").status_code == 302  # the login first, as every page
    _login(client)
    monkeypatch.delenv("IGSEND_CALLBACKS_FILE", raising=False)
    assert "set IGSEND_CALLBACKS_FILE" in client.get("/ui/callbacks").get_data(as_text=True)
    path = tmp_path / "callbacks.toml"
    path.write_text(f'[endpoints.crm]\nurl = "https://crm.example.com/igsend"\nsecret = "{SECRET}"\n')
    monkeypatch.setenv("IGSEND_CALLBACKS_FILE", str(path))
    for index in range(2):
        private_db.rpush(callbacks.key("crm", "failed"), json.dumps(
            {"webhook_id": f"msg_o1-{index}", "type": "message.dead", "job": f"job-{index}", "account": "default",
             "at": 1.0e9, "tries": 10, "error": f"HTTP 500: {HTML}", "first_try_at": 1.0e9}))
    private_db.hset(callbacks.key("crm", "stats"), mapping={
        "sent": 7, "failed": 2, "retries": 18, "last_error": "HTTP 500: down", "last_error_at": 1.0e9,
        "state": "disabled", "disabled": "the endpoint answered 410 Gone at 2026-12-05T20:00:00Z"})
    page = client.get("/ui/callbacks").get_data(as_text=True)
    assert "https://crm.example.com/igsend" in page and "410 Gone" in page and ">disabled<" in page
    assert 'href="/ui/jobs/job-0"' in page and 'href="/ui/jobs/job-1"' in page and "msg_o1-1" in page
    assert "2 failed events kept" in page and "HTTP 500: down" in page
    assert "&lt;script&gt;" in page and "<script>alert" not in page  # an endpoint's answer is text
    assert SECRET not in page
    assert client.post("/ui/callbacks/crm/replay").status_code == 400  # no CSRF token: nothing changes
    assert private_db.llen(callbacks.key("crm", "failed")) == 2
    token = _csrf(page.encode())
    done = client.post("/ui/callbacks/crm/replay", data={"csrf_token": token}, follow_redirects=True)
    assert "crm: 2 failed events queued again" in done.get_data(as_text=True)
    assert private_db.llen(callbacks.key("crm", "queue")) == 2 and private_db.llen(callbacks.key("crm", "failed")) == 0
    assert callbacks.state(private_db, "crm")["state"] == "enabled"
    unknown = client.post("/ui/callbacks/nope/replay", data={"csrf_token": token}, follow_redirects=True)
    assert "no endpoint &#39;nope&#39;" in unknown.get_data(as_text=True)
