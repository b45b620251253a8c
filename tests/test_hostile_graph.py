"""A real worker against a Graph stand-in that answers the ways that used to cause duplicate DMs.

The stand-in (a local HTTP server in this process) answers per recipient: 2xx without ``recipient_id``, a
redirect loop, an answer trickled past the send deadline, a 429 without a Graph body, a non-Latin-1 surprise.
The worker runs in its own process on its own Redis database, so the session's worker never sees these jobs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis as redis_lib

from tests.conftest import TOKEN, reset_client_caches, wait_until

DEADLINE = 2.0


class StandIn:
    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.cut: set[str] = set()  # recipients whose answer could not be finished: the worker hung up
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recipient = json.loads(raw)["recipient"]["id"]
                outer.posts[recipient] += 1
                if recipient.startswith("empty200"):
                    self._answer(200, b"")
                elif recipient.startswith("nonjson200"):
                    self._answer(200, b"OK, sent", "text/plain")
                elif recipient.startswith("obj200"):
                    self._answer(200, b"{}")
                elif recipient.startswith("redirect"):
                    self.send_response(307)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif recipient.startswith("bare429") and outer.posts[recipient] == 1:
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "17")
                    self.end_headers()
                    self.wfile.write(b"Too Many Requests")
                elif recipient.startswith("trickle"):
                    self._trickle(recipient)
                else:
                    self._answer(200, json.dumps({"recipient_id": recipient, "message_id": f"m-{recipient}"}).encode())

            def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _trickle(self, recipient: str) -> None:
                body = json.dumps({"recipient_id": recipient, "message_id": "m-late"}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                try:
                    for byte in head.encode() + body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.25)  # each byte well within a read timeout; the whole far past the deadline
                except OSError:
                    outer.cut.add(recipient)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def hostile_worker(redis_url: str, stand_in: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from igsend.local.processes import start_worker

    url = redis_url.rsplit("/", 1)[0] + "/2"
    redis_lib.Redis.from_url(url).flushdb()
    env = {"IGSEND_REDIS_URL": url, "IGSEND_GRAPH_URL": stand_in.url, "IGSEND_ACCESS_TOKEN": TOKEN,
           "IGSEND_ACCOUNT_ID": "17841400000000001", "IGSEND_LOGIN": "instagram", "IGSEND_ACCOUNTS_FILE": "",
           "IGSEND_SEND_DEADLINE": str(DEADLINE), "IGSEND_RETRY_BASE": "0.2", "IGSEND_RETRY_CAP": "1",
           "IGSEND_MAX_ATTEMPTS": "4"}
    worker = start_worker(env=env, log_path=tmp_path_factory.mktemp("logs") / "hostile-worker.log", concurrency=8)
    previous = os.environ["IGSEND_REDIS_URL"]
    os.environ["IGSEND_REDIS_URL"] = url
    reset_client_caches()
    yield url
    worker.stop()
    os.environ["IGSEND_REDIS_URL"] = previous
    reset_client_caches()
    redis_lib.Redis.from_url(url).flushdb()


pytestmark = pytest.mark.slow


@pytest.mark.scenario
@pytest.mark.parametrize("recipient", ["empty200", "nonjson200", "obj200"])
def test_2xx_without_recipient_id_is_unknown_and_sent_once(hostile_worker: str, stand_in: StandIn,
                                                           recipient: str) -> None:
    import producers

    job = producers.send_text(recipient, "did it go?")
    wait_until(lambda: job.status().final, timeout=30)
    time.sleep(1.5)  # a retry would have come by now (backoff base 0.2 s)
    info = job.info()
    assert info["status"] == "unknown"
    assert stand_in.posts[recipient] == 1
    assert "may have sent" in info["reason"]


def test_a_redirect_loop_is_one_post_and_holds_the_account(hostile_worker: str, stand_in: StandIn) -> None:
    import producers
    from igsend.core.account_state import mark_healthy, state

    job = producers.send_text("redirect", "where to?")
    wait_until(lambda: job.status().final, timeout=30)
    assert stand_in.posts["redirect"] == 1
    info = job.info()
    assert info["status"] == "dead" and info["error"]["class"] == "redirect" and info["error"]["http_status"] == 307
    assert state("default")["health"] == "broken" and "redirect" in state("default")["reason"]
    mark_healthy("default")


def test_a_trickled_answer_is_cut_before_the_lock_and_never_resent(hostile_worker: str, stand_in: StandIn) -> None:
    import producers
    from igsend.core.settings import Settings

    job = producers.send_text("trickle", "slow answer")
    started = time.monotonic()
    wait_until(lambda: job.status().final, timeout=30)
    took = time.monotonic() - started
    lock_ttl = Settings(send_deadline=DEADLINE).lock_ttl("text")
    assert took < lock_ttl  # the POST ended before its lock (and the visibility timeout) could expire
    assert job.info()["status"] == "unknown"
    wait_until(lambda: "trickle" in stand_in.cut, timeout=10)  # the worker hung up on the live answer
    time.sleep(1.0)
    assert stand_in.posts["trickle"] == 1


def test_429_without_a_graph_body_pauses_without_counting_a_failure(hostile_worker: str, stand_in: StandIn) -> None:
    import producers

    job = producers.send_text("bare429", "after the pause")
    assert job.result(timeout=30)["recipient_id"] == "bare429"
    log = job.info()["attempt_log"]
    assert [a["outcome"] for a in log] == ["throttled", "delivered"]
    assert log[1]["at"] - log[0]["at"] >= 1.0  # Retry-After: 1 was honoured
    assert job.info()["attempts"] == 2
