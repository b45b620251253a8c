"""The console in a real browser: Playwright for Python driving Debian's Chromium (``executable_path``; never
``playwright install``, which downloads a browser) against the app served by a real WSGI server, on the session's
Redis with a real worker and the sandbox.

One operator's session in one test (a login costs a page load; the whole file stays well under a minute)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import requests

import producers
from igsend.core import dlq
from igsend.core.account_state import state
from tests.conftest import received, wait_until

pytestmark = pytest.mark.usefixtures("worker", "clean")

OPERATOR = "browser-operator-key-0123"
HTML = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b>'


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("Debian's chromium is not installed (ops/test installs it when run as root)")
    return binary


@pytest.fixture(scope="module")
def console_url(redis_url: str) -> Iterator[str]:
    """The API app (console included) under werkzeug's threaded WSGI server, on a free port."""
    from werkzeug.serving import make_server

    from producers.api import create_app

    previous = os.environ.get("IGSEND_UI_SECRET")
    os.environ["IGSEND_UI_SECRET"] = "browser-test-secret-0123456789"
    server = make_server("127.0.0.1", 0, create_app(api_keys=[OPERATOR, "producer-only:send+read"]), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    if previous is None:
        os.environ.pop("IGSEND_UI_SECRET", None)
    else:
        os.environ["IGSEND_UI_SECRET"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    binary = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's own sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def fault(sandbox: str, recipient: str, *faults: dict) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(faults)},
                  timeout=5).raise_for_status()


def test_an_operator_works_dead_letters_accounts_and_schedules(browser, console_url: str, sandbox: str, tmp_path,
                                                               monkeypatch) -> None:
    # a dead letter whose text is HTML, and one of another code, the way workers make them
    fault(sandbox, "nobody1", {"code": 100, "subcode": 2018001})
    dead = producers.send_text("nobody1", HTML)
    fault(sandbox, "window1", {"code": 10, "subcode": 2534022})
    other = producers.send_text("window1", "too late")
    for job in (dead, other):
        wait_until(lambda job=job: dlq.show(job.id), timeout=20)
    later = producers.send_text("later1", "see you tomorrow", send_at=time.time() + 3600)

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)

    # every page sends a visitor without a session to the login
    page.goto(f"{console_url}/ui/dead-letters")
    assert page.url.startswith(f"{console_url}/ui/login")
    page.fill("input[name=api_key]", "producer-only")
    page.click("button[type=submit]")
    assert "lacks the scope 'operate'" in page.inner_text("main")
    page.fill("input[name=api_key]", OPERATOR)
    page.click("button[type=submit]")
    assert page.url.startswith(f"{console_url}/ui/dead-letters")  # back where the visitor was going

    # see the dead letters, filter by Graph code, open one: the HTML payload is text
    assert dead.id in page.inner_text("table") and other.id in page.inner_text("table")
    page.fill("input[name=code]", "100")
    page.click("form.filters button[type=submit]")
    assert "code=100" in page.url
    assert dead.id in page.inner_text("table") and other.id not in page.inner_text("table")
    page.click(f"text={dead.id}")
    assert "bold" not in page.inner_text("main")  # no text until asked
    page.click("text=Show the message text")
    shown = page.inner_text("pre.message")
    assert '<img src=x onerror=' in shown and "<b>bold</b>" in shown  # shown as text, not markup
    assert page.locator("main img").count() == 0 and page.title() != "pwned"

    # replay it and see it delivered
    page.click("form[action$='/replay'] button")
    assert "replayed 1 dead letter" in page.inner_text("main")
    wait_until(lambda: producers.get_job(dead.id).status() == "delivered", timeout=20)
    page.reload()
    assert "delivered" in page.inner_text("dl")
    assert received(sandbox, recipient="nobody1")

    # replay the selected one from the list, through the confirmation
    page.goto(f"{console_url}/ui/dead-letters")
    page.check(f"input[name=job_id][value='{other.id}']")
    page.click("button:has-text('Purge')")
    assert "Purge 1 dead letter?" in page.inner_text("h1")
    page.click("button:has-text('Yes, purge 1')")
    assert "purged 1 dead letters" in page.inner_text("main")
    assert dlq.show(other.id) is None

    # cancel the scheduled message
    page.goto(f"{console_url}/ui/scheduled")
    row = page.locator("tr", has_text=later.id)
    row.locator("button:has-text('Cancel')").click()
    assert f"cancelled job {later.id}" in page.inner_text("main")
    assert later.status() == "cancelled"

    # heal a broken account: a token error breaks it, the operator heals it
    fault(sandbox, "victim1", {"code": 190, "subcode": 463})
    producers.send_text("victim1", "token expired")
    wait_until(lambda: state("default")["health"] == "broken", timeout=20)
    page.goto(f"{console_url}/ui/accounts")
    row = page.locator("tr", has_text="default").first
    assert "broken" in row.inner_text()
    row.locator("button:has-text('Heal')").click()
    assert "account default marked healthy" in page.inner_text("main")
    assert state("default")["health"] == "healthy"

    # the callbacks page: an endpoint's failed event, linked to its job, queued again with Replay
    from igsend.core import callbacks
    from igsend.core.store import get_redis

    (tmp_path / "callbacks.toml").write_text('[endpoints.crm]\nurl = "https://crm.example.com/igsend"\n'
                                             'secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n')
    monkeypatch.setenv("IGSEND_CALLBACKS_FILE", str(tmp_path / "callbacks.toml"))  # read per request
    get_redis().rpush(callbacks.key("crm", "failed"), json.dumps(
        {"webhook_id": "msg_o1-0", "type": "message.dead", "job": dead.id, "account": "default", "at": 1.0e9,
         "tries": 10, "error": "HTTP 500: down", "first_try_at": 1.0e9}))
    page.click("nav >> text=Callbacks")
    assert "https://crm.example.com/igsend" in page.inner_text("table") and "1 failed event kept" in page.inner_text(
        "main")
    assert page.locator(f"a[href='/ui/jobs/{dead.id}']").count() == 1
    page.click("button:has-text('Replay')")
    assert "crm: 1 failed event queued again" in page.inner_text("main")
    assert get_redis().llen(callbacks.key("crm", "queue")) == 1

    # the overview shows the accounts and refreshes itself (htmx, same origin, no inline script)
    page.goto(f"{console_url}/ui")
    assert "Workers alive" in page.inner_text("main") and "default" in page.inner_text("table")

    # a POST without the CSRF token, even with the session cookie, is refused and changes nothing
    again = producers.send_text("later2", "tomorrow too", send_at=time.time() + 3600)
    refused = context.request.post(f"{console_url}/ui/jobs/{again.id}/cancel", max_redirects=0)
    assert refused.status == 400 and again.status() == "scheduled"

    # and a browser without a session gets the login page, not the data
    stranger = browser.new_context()
    anonymous = stranger.request.get(f"{console_url}/ui/dead-letters", max_redirects=0)
    assert anonymous.status == 302 and "/ui/login" in anonymous.headers["location"]
    stranger.close()
    context.close()


def test_the_overview_draws_the_last_hours_traffic_in_chromium(browser, console_url: str) -> None:
    """Messages delivered this minute appear on the outcomes chart, drawn by the server (no script needed)."""
    jobs = [producers.send_text(f"chart{i}", "charted") for i in range(3)]
    for job in jobs:
        job.wait(timeout=30)
    context = browser.new_context(java_script_enabled=False)  # the charts read without JavaScript
    page = context.new_page()
    page.goto(f"{console_url}/ui/login")
    page.fill("input[name=api_key]", OPERATOR)
    page.click("button[type=submit]")
    page.goto(f"{console_url}/ui")
    charts = page.locator("#charts svg")
    assert charts.count() == 3
    box = charts.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    summary = page.locator("#charts .chart-summary").first.inner_text()
    delivered = int(summary.split("delivered ")[1].split(",")[0].replace(" ", ""))
    assert delivered >= 3, summary
    assert page.locator("#charts polyline").count() >= 3
    context.close()
