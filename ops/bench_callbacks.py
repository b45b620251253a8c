"""`ops/bench callbacks`: sending throughput with no callback endpoint, with one healthy endpoint (a local receiver
answering 204) and with one that never answers (it accepts the connection and says nothing: every try waits out
the sender's 15 s timeout), side by side in one run on one stack; how many callbacks the healthy receiver got, and
how long after the last delivery the last one arrived."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ops.bench_common import (
    LATENCY_MS,
    ProcessMeter,
    format_row,
    igsend_env,
    reset_sandbox,
    run_igsend,
    stack,
)

SECRET = "whsec_" + "YmVuY2gtY2FsbGJhY2tzLXNlY3JldC0wMTIz"  # base64 of a 27-byte key


class Receiver:
    """A healthy endpoint: verifies each callback's signature (standardwebhooks), answers 204, keeps when each
    webhook-id first arrived."""

    def __init__(self) -> None:
        from standardwebhooks import Webhook

        self.first_seen: dict[str, float] = {}
        self.requests = 0
        self.bad = 0
        self.lock = threading.Lock()
        receiver = self
        webhook = Webhook(SECRET)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint behind a load balancer

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                try:
                    webhook.verify(body, headers)
                    ok = True
                except Exception:  # noqa: BLE001 - counted: any failure to verify
                    ok = False
                with receiver.lock:
                    receiver.requests += 1
                    if ok:
                        receiver.first_seen.setdefault(headers["webhook-id"], time.time())
                    else:
                        receiver.bad += 1
                self.send_response(204 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/igsend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Silent:
    """An endpoint that accepts every connection and never answers (nor reads): each try times out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/igsend"
        self.held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _callbacks_file(tmp: Path, name: str, url: str) -> Path:
    path = tmp / f"callbacks-{name}.toml"
    path.write_text(f'[endpoints.{name}]\nurl = "{url}"\nsecret = "{SECRET}"\nallow_http = true\n'
                    "allow_private = true\n")
    return path


def _wait_for_group(redis_url: str, timeout: float = 30.0) -> None:
    """Until the callbacks' consumer group reads the outcome stream: events from then on are fanned out."""
    import redis

    from igsend.core.callbacks import GROUP
    from igsend.core.store import OUTCOMES_KEY

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(group["name"] == GROUP for group in client.xinfo_groups(OUTCOMES_KEY)):
                return
        except redis.ResponseError:  # no stream yet
            pass
        time.sleep(0.1)
    raise RuntimeError("the worker's callbacks sender did not start")


def bench_callbacks(small: bool, rounds: int = 1) -> int:
    """The four rows; with ``rounds`` > 1, then that many more pairs of rows without callbacks and with an endpoint
    that never answers, alternating, so that the machine's own drift falls on both alike."""
    from igsend.core import callbacks
    from igsend.core.store import get_redis
    from igsend.local.processes import start_worker

    count = 300 if small else 5000
    processes = int(os.environ.get("IGSEND_PROCESSES") or os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    notes: list[str] = []
    receiver, silent = Receiver(), Silent()
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            with stack(tmp, accounts=10, budget=1_000_000, workers=0, latency_ms=LATENCY_MS,
                       concurrency=None) as (redis_url, sandbox, names):

                def run_row(label: str, name: str | None, url: str | None) -> dict[str, Any]:
                    reset_sandbox(sandbox)
                    extra = {"IGSEND_CALLBACKS_FILE": str(_callbacks_file(tmp, name, url))} if name and url else {}
                    worker = start_worker(env=igsend_env(redis_url, sandbox, tmp / "accounts.toml", extra),
                                          log_path=tmp / f"worker-{name or 'none'}-{len(rows) + len(pairs)}.log",
                                          processes=processes)
                    try:
                        if name:
                            _wait_for_group(redis_url)
                        whole = ProcessMeter([worker.process.pid])
                        row = run_igsend([worker.process.pid], sandbox, names, count, label)
                        last_delivery = row.pop("last_delivery")
                        print(format_row(row), flush=True)
                        if name == "healthy":
                            deadline = time.monotonic() + 60
                            while len(receiver.first_seen) < count and time.monotonic() < deadline:
                                time.sleep(0.1)
                            cpu, _ = whole.stop()
                            with receiver.lock:
                                got, last = len(receiver.first_seen), max(receiver.first_seen.values(), default=0)
                                duplicates, bad = receiver.requests - got - receiver.bad, receiver.bad
                            notes.append(
                                f"healthy endpoint: {got} of {count} callbacks received ({duplicates} twice, {bad} "
                                f"not verified), the last {last - last_delivery:.2f} s after the last delivery; "
                                f"worker CPU incl. sending the callbacks {cpu / count * 1000:.2f} ms per message")
                        else:
                            whole.stop()
                        if name == "silent":
                            state = callbacks.state(get_redis(), name)
                            notes.append(
                                f"silent endpoint: {silent.accepted} connections accepted and never answered; after "
                                f"the run {state['queued']} events queued, {state['sending']} in flight, "
                                f"{state['jobs_retrying']} jobs waiting for a retry, {state['sent']} sent")
                        return row
                    finally:
                        worker.stop(timeout=30)

                print(f"ops/bench callbacks: {count} messages per row over {len(names)} accounts, sandbox latency "
                      f"{LATENCY_MS} ms, igsend worker --processes {processes}, {os.cpu_count()} cores; CPU s/1k = "
                      "the worker's CPU ms per message while sending", flush=True)
                # the row without callbacks first and last: the difference between the two is the drift of the
                # run itself (a Redis holding more records and stream entries, a busier machine)
                for label, name, url in [("no callback endpoint", None, None),
                                         ("one healthy endpoint (204)", "healthy", receiver.url),
                                         ("one endpoint never answering", "silent", silent.url),
                                         ("no callback endpoint, again", None, None)]:
                    rows.append(run_row(label, name, url))
                for index in range(1, rounds):
                    pairs.append(run_row(f"pair {index}: no endpoint", None, None))
                    pairs.append(run_row(f"pair {index}: never answering", f"silent{index}", silent.url))
    finally:
        receiver.close()
        silent.close()

    print()
    print(f"{'variant':<32} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} {'peak RSS MB':>12}")
    for row in rows + pairs:
        print(format_row(row))
    first, last = rows[0], rows[-1]
    rate = (first["rate"] + last["rate"]) / 2
    cpu = (first["cpu_per_1000"] + last["cpu_per_1000"]) / 2
    print(f"without callbacks, first and last row: {first['rate']:.0f} and {last['rate']:.0f} msgs/s, "
          f"{first['cpu_per_1000']:.2f} and {last['cpu_per_1000']:.2f} CPU ms per message (compared below with "
          "their mean)")
    for row in rows[1:-1]:
        print(f"{row['name']}: {row['rate'] / rate * 100:.0f}% of the throughput without callbacks, "
              f"CPU per message {row['cpu_per_1000'] / cpu:.2f}x")
    if pairs:
        without = rows[:1] + rows[-1:] + pairs[0::2]
        with_silent = [rows[2], *pairs[1::2]]
        mean = {label: (sum(r["rate"] for r in group) / len(group), sum(r["cpu_per_1000"] for r in group) / len(group))
                for label, group in (("without", without), ("silent", with_silent))}
        print(f"every row without callbacks ({len(without)}) against every row with the endpoint never answering "
              f"({len(with_silent)}): {mean['without'][0]:.0f} vs {mean['silent'][0]:.0f} msgs/s "
              f"({mean['silent'][0] / mean['without'][0] * 100:.0f}%), {mean['without'][1]:.2f} vs "
              f"{mean['silent'][1]:.2f} CPU ms per message ({mean['silent'][1] / mean['without'][1]:.2f}x)")
    for note in notes:
        print(note)
    return 0
