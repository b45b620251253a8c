"""The Graph client never sends a message twice by itself: no redirects followed, a total deadline per POST.

Real sockets: a local HTTP server that redirects every POST to itself, and one that trickles its answer a
byte at a time (each read well inside a per-read timeout, the whole answer far past any deadline).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.accounts import Account
from workers.errors import Outcome, classify_answer, classify_transport
from workers.graph import GraphClient, SendDeadlineExceeded

TOKEN = "IGQtesttoken" + "x" * 40


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.posts = 0
        outer = self

        class Handler(handler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                outer.posts += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                super().do_POST()

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _RedirectLoop(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.send_response(307)
        self.send_header("Location", self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Trickle(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        answer = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n'
                  b'{"recipient_id":"1","message_id":"m-trickled-slowly-xxxxxxxx"}')
        try:
            for byte in answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


def _account(url: str) -> Account:
    return Account(name="default", id="me", login="instagram", graph_url=url, api_version="v25.0", token=TOKEN)


@pytest.fixture
def redirect_loop() -> Iterator[_Server]:
    server = _Server(_RedirectLoop)
    yield server
    server.close()


@pytest.fixture
def trickle() -> Iterator[_Server]:
    server = _Server(_Trickle)
    yield server
    server.close()


@pytest.mark.parametrize("login", ["instagram", "facebook"])
def test_a_redirect_is_answered_not_followed(redirect_loop: _Server, login: str) -> None:
    account = Account(name="a", id="me", login=login, graph_url=redirect_loop.url, api_version="v25.0", token=TOKEN)
    answer = GraphClient().send(account, {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    assert answer.status == 307
    assert redirect_loop.posts == 1  # one POST, not 31
    verdict = classify_answer(answer.status, answer.body, location=answer.headers.get("Location"))
    assert verdict.outcome is Outcome.ACCOUNT_BROKEN and verdict.error()["class"] == "redirect"


def test_a_trickled_answer_is_cut_at_the_total_deadline(trickle: _Server) -> None:
    client = GraphClient(read_timeout=30.0)  # each byte arrives well within any per-read timeout
    # SendDeadlineExceeded is raised only by the deadline cutting the answer short (the whole answer, ~13 s,
    # would have returned normally): the property, without timing it
    with pytest.raises(SendDeadlineExceeded) as info:
        client.send(_account(trickle.url), {"recipient": {"id": "1"}, "message": {"text": "hi"}}, deadline=1.0)
    assert trickle.posts == 1
    assert classify_transport(info.value).outcome is Outcome.UNKNOWN  # it may have been sent: never resent
    assert TOKEN not in str(info.value)


def test_the_deadline_does_not_touch_a_pooled_connection_reused_later(trickle: _Server) -> None:
    # After a POST under a deadline finishes, its connection may serve the next POST; the old deadline must
    # not cut that one. A fast server: a plain socket answering at once, twice, on one keep-alive connection.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for _ in range(2):
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                body = b'{"recipient_id":"1","message_id":"m"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                if _ == 0:
                    time.sleep(0.6)  # past the first POST's deadline, before the second POST

    threading.Thread(target=serve, daemon=True).start()
    client = GraphClient()
    account = _account(f"http://127.0.0.1:{port}")
    assert client.send(account, {"recipient": {"id": "1"}}, deadline=0.3).status == 200
    time.sleep(0.5)  # the first deadline passes while the connection sits in the pool
    assert client.send(account, {"recipient": {"id": "1"}}, deadline=5.0).status == 200
    listener.close()
