"""Screenshots of every console page for the docs (docs/_static/console/*.png), behind ``ops/console-screenshots``.

A private stack (Redis, sandbox, one worker: ``ops/bench_common.stack``), some traffic with scripted faults so each
page has something to show (dead letters, a broken account, scheduled messages, a status-callback endpoint that
answers and one that cannot be reached), the app under a WSGI server thread, and Playwright driving Debian's
chromium (never ``playwright install``).
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.bench_common import stack  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "console"
KEY = "screenshot-operator-key"


class Receiver(BaseHTTPRequestHandler):
    """A callback endpoint that takes every event."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass


def callbacks_file(folder: Path, receiver_port: int) -> Path:
    """Two endpoints: one that answers, one on a port where nothing listens (its failures show)."""
    os.environ["SCREENSHOT_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    path = folder / "callbacks.toml"
    path.write_text(
        f'[endpoints.crm]\nurl = "http://127.0.0.1:{receiver_port}/igsend"\n'
        'secret_env = "SCREENSHOT_WEBHOOK_SECRET"\nallow_http = true\nallow_private = true\n\n'
        '[endpoints.analytics]\nurl = "http://127.0.0.1:9/events"\nsecret_env = "SCREENSHOT_WEBHOOK_SECRET"\n'
        'events = ["message.dead"]\nallow_http = true\nallow_private = true\n')
    return path


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("Debian's chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["IGSEND_UI_SECRET"] = "screenshots-secret-0123456789"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IGSEND_CALLBACKS_FILE"] = str(callbacks_file(Path(tmp), receiver.server_port))
        with stack(Path(tmp), accounts=2, budget=None, workers=1, latency_ms=20, concurrency=4,
                   worker_env={"IGSEND_CALLBACKS_FILE": os.environ["IGSEND_CALLBACKS_FILE"]}) as (_, sandbox, accounts):
            shoot(sandbox, accounts, chromium)
    receiver.shutdown()
    for path in sorted(OUT.glob("*.png")):
        print(path.relative_to(OUT.parent.parent.parent))
    return 0


def shoot(sandbox: str, accounts: list[str], chromium: str) -> None:
    """Traffic for every page, then a screenshot of each."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    import producers
    from igsend.core import dlq

    def fault(recipient: str, code: int, subcode: int) -> None:
        requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": [
            {"code": code, "subcode": subcode}]}, timeout=5).raise_for_status()

    dead = []
    for i, (code, subcode) in enumerate([(100, 2018001), (10, 2534022), (551, 1545041), (100, 2018001)]):
        fault(f"1784000000000{i}", code, subcode)
        dead.append(producers.send_text(f"1784000000000{i}", f"Your order #{1000 + i} has shipped",
                                        account=accounts[0]))
    # A couple of minutes of traffic for the charts: a burst every 5 s, growing, and a refusal now and then.
    started = time.monotonic()
    burst = 0
    while time.monotonic() - started < 125:
        burst += 1
        producers.send_many([{"kind": "text", "recipient": f"1785{burst:05d}{i:05d}", "text": "Thanks!",
                              "account": accounts[0]} for i in range(2 + burst // 2)])
        if burst % 6 == 0:
            fault(f"1788{burst:010d}", 100, 2018001)
            producers.send_text(f"1788{burst:010d}", "refused", account=accounts[0])
        time.sleep(5)
    for i in range(3):
        producers.send_text(f"1786000000000{i}", "Reminder: your appointment is tomorrow",
                            account=accounts[0], send_at=time.time() + 3600 * (i + 1))
    fault("17870000000000", 190, 463)
    producers.send_text("17870000000000", "token expired", account=accounts[1])
    deadline = time.monotonic() + 30
    while len(dlq.list_entries()) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)

    from producers.api import create_app

    server = make_server("127.0.0.1", 0, create_app(api_keys=[KEY]), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"{base}/ui/login")
            page.screenshot(path=str(OUT / "login.png"))
            page.fill("input[name=api_key]", KEY)
            page.click("button[type=submit]")
            shots = [("overview", "/ui"), ("dead-letters", "/ui/dead-letters"),
                     ("dead-letters-filtered", "/ui/dead-letters?code=100"),
                     ("dead-letter", f"/ui/dead-letters/{dead[0].id}?show=text"),
                     ("accounts", "/ui/accounts"), ("scheduled", "/ui/scheduled"),
                     ("callbacks", "/ui/callbacks"),
                     ("job", f"/ui/jobs/{dead[0].id}")]
            for name, path in shots:
                page.goto(base + path)
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
            page.goto(f"{base}/ui")
            page.locator("#charts").screenshot(path=str(OUT / "overview-charts.png"))
            page.goto(f"{base}/ui/dead-letters")
            page.click("input[name=scope][value=all]")
            page.click("button:has-text('Replay')")
            page.screenshot(path=str(OUT / "confirm.png"))
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
