"""`ops/bench throughput`: naive Celery, a bare thread pool, featureless Celery and igsend, side by side."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from ops.bench_common import (
    LATENCY_MS,
    ProcessMeter,
    format_redis,
    format_row,
    igsend_worker,
    make_row,
    reset_sandbox,
    run_igsend,
    stack,
    wait_sandbox_count,
    wire_latencies,
)
from workers.accounts import DEFAULT_API_VERSION  # the version igsend's own rows send with


def run_celery(tmp: Path, redis_url: str, sandbox: str, token: str, count: int, *, app: str, argv: list[str],
               processes: int, label: str) -> dict:
    """A plain Celery app from this folder (``naive_app`` or ``featureless_app``): ``processes`` worker processes
    started as ``celery -A APP worker ARGV``, ``count`` tasks of one POST each published to it, worker CPU
    measured until the sandbox has accepted them all."""
    import subprocess

    from celery import Celery

    queue = app.removesuffix("_app")
    env = {**os.environ, f"{queue.upper()}_BROKER": redis_url, "PYTHONPATH": str(Path(__file__).parent)}
    log = open(tmp / f"{queue}.log", "wb")  # noqa: SIM115
    workers = [subprocess.Popen([sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "--loglevel",
                                 "WARNING", "--hostname", f"{queue}{index}@%h", *argv], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent)
               for index in range(processes)]
    client = Celery(queue, broker=redis_url)
    client.conf.update(task_serializer="json", task_default_queue=queue)
    try:
        while len(client.control.ping(timeout=0.5) or []) < processes:
            time.sleep(0.2)
        # Queue everything first, with the workers not consuming: publishing one send_task at a time from here
        # is slower than these workers, and its pace must not be what the row measures.
        client.control.cancel_consumer(queue, reply=True)
        url = f"{sandbox}/{DEFAULT_API_VERSION}/17841400000000000/messages"
        with client.producer_or_acquire() as producer:
            for i in range(count):
                client.send_task(f"{queue}.send", args=[url, token, {"recipient": {"id": f"r{i}"},
                                                                     "message": {"text": f"{queue} {i}"}}],
                                 producer=producer)
        meter = ProcessMeter([worker.pid for worker in workers])
        started = time.time()
        sent_at = {f"{queue} {i}": started for i in range(count)}
        client.control.add_consumer(queue, reply=True)
        wait_sandbox_count(sandbox, count, timeout=count / 5 + 60)
        cpu, rss = meter.stop()
        latencies, _, last = wire_latencies(sandbox, sent_at)
        return make_row(label, len(latencies), last - started, latencies, cpu, rss)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        client.close()


def run_naive(tmp: Path, redis_url: str, sandbox: str, token: str, count: int) -> dict:
    """The Celery task most teams start with: prefork, concurrency = cores, a new connection per POST."""
    cores = os.cpu_count() or 2
    return run_celery(tmp, redis_url, sandbox, token, count, app="naive_app", argv=["-P", "prefork", "-c", str(cores)],
                      processes=1, label=f"naive (prefork, c={cores})")


def run_featureless(tmp: Path, redis_url: str, sandbox: str, token: str, count: int) -> dict:
    """Celery's own floor: threads pool, acks_late, no result, no events, one pooled POST (ops/featureless_app.py);
    one process per core, as ``igsend worker`` runs."""
    cores = os.cpu_count() or 2
    return run_celery(tmp, redis_url, sandbox, token, count, app="featureless_app",
                      argv=["-P", "threads", "-c", "64", "--without-gossip", "--without-mingle"], processes=cores,
                      label=f"featureless Celery ({cores}x64 thr)")


def run_ceiling(sandbox: str, token: str, count: int, threads: int = 200) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import psutil
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=threads))
    url = f"{sandbox}/{DEFAULT_API_VERSION}/17841400000000000/messages"
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    sent_at = {}

    def post(i: int) -> None:
        text = f"ceiling {i}"
        sent_at[text] = time.time()
        session.post(url, json={"recipient": {"id": f"r{i}"}, "message": {"text": text}},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()

    started = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, range(count)))
    elapsed = time.time() - started
    cpu = sum(me.cpu_times()[:2]) - cpu0
    latencies = []
    for message in requests.get(f"{sandbox}/_sandbox/messages", timeout=60).json()["messages"]:
        text = message["body"]["message"]["text"]
        if text in sent_at:
            latencies.append(message["received_at"] + LATENCY_MS / 1000 - sent_at[text])
    return make_row(f"ceiling (thread pool, {threads})", count, elapsed, latencies, cpu, me.memory_info().rss)


def bench_enqueue(count: int) -> tuple[float, float]:
    from igsend.core import presence
    from igsend.core.store import get_redis
    from producers import send_many, send_text

    def empty_redis() -> None:
        # Producers cache what the workers announced (igsend.core.presence): forget it with the data.
        get_redis().flushdb()
        presence.forget()

    documents = [{"kind": "text", "recipient": f"r{i}", "text": f"enqueue {i}"} for i in range(count)]
    # A Redis no worker registered in (the throughput run's workers served acct*, not "default"): producers
    # would refuse "default" as an account no worker knows (igsend.core.presence).
    empty_redis()
    started = time.perf_counter()
    for start in range(0, count, 1000):
        send_many(documents[start:start + 1000])
    many = count / (time.perf_counter() - started)
    empty_redis()
    started = time.perf_counter()
    for document in documents:
        send_text(document["recipient"], document["text"])
    loop = count / (time.perf_counter() - started)
    empty_redis()
    return many, loop


def bench_throughput(small: bool, rounds: int = 1) -> int:
    """The table; with ``rounds`` > 1, then that many more pairs of rows, the bare POST and igsend on its defaults
    one after the other, and the median of their ratios: the bare POST's own cost moves with the machine's load
    between the rows of one run (0.75-1.31 ms so far), and a pair measured minutes apart compares two loads."""
    count = 300 if small else 5000
    naive_count = 60 if small else 5000
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp, accounts=100, budget=1_000_000, workers=0, latency_ms=LATENCY_MS,
                   concurrency=None) as (redis_url, sandbox, names):
            token = _account_tokens(tmp)[0]
            print(f"ops/bench throughput: sandbox latency {LATENCY_MS} ms, {os.cpu_count()} cores; "
                  "CPU s/1k = CPU ms per message (workers' processes; the ceiling: this process)", flush=True)
            rows.append(run_naive(tmp, redis_url, sandbox, token, naive_count))
            print(format_row(rows[-1]), flush=True)
            reset_sandbox(sandbox)
            rows.append(run_ceiling(sandbox, token, count))
            print(format_row(rows[-1]), flush=True)
            reset_sandbox(sandbox)
            rows.append(run_featureless(tmp, redis_url, sandbox, token, count))
            print(format_row(rows[-1]), flush=True)
            reset_sandbox(sandbox)
            processes = int(os.environ.get("IGSEND_PROCESSES") or os.cpu_count() or 1)
            with igsend_worker(tmp, redis_url, sandbox, processes=processes, log_name="igsend-worker.log") as worker:
                rows.append(run_igsend([worker.process.pid], sandbox, names[:1], count, "igsend (defaults)",
                                       redis_url=redis_url))
                redis_figures = rows[-1]["redis"]
                print(format_row(rows[-1]), flush=True)
                by_accounts = []
                for n in (1, 10, 100):
                    reset_sandbox(sandbox)
                    row = run_igsend([worker.process.pid], sandbox, names[:n], count, f"igsend, {n} accounts")
                    by_accounts.append(row)
                    print(format_row(row), flush=True)
            reset_sandbox(sandbox)
            sampled = []
            for label, sampler in (("igsend, tracing on (default sampler)", {}),
                                   ("igsend, tracing on, 10 % sampled", {
                                       "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                       "OTEL_TRACES_SAMPLER_ARG": "0.1"})):
                reset_sandbox(sandbox)
                log_name = f"igsend-worker-traced{len(sampled)}.log"
                with otlp_sink() as collector, igsend_worker(
                        tmp, redis_url, sandbox, processes=processes, log_name=log_name,
                        extra={"OTEL_EXPORTER_OTLP_ENDPOINT": collector, **sampler}) as worker:
                    sampled.append(run_igsend([worker.process.pid], sandbox, names[:1], count, label))
                    print(format_row(sampled[-1]), flush=True)
            traced, traced_tenth = sampled
            pairs = []
            if rounds > 1:
                with igsend_worker(tmp, redis_url, sandbox, processes=processes,
                                   log_name="igsend-worker-rounds.log") as worker:
                    for index in range(1, rounds):
                        reset_sandbox(sandbox)
                        bare_row = run_ceiling(sandbox, token, count)
                        reset_sandbox(sandbox)
                        igsend_row = run_igsend([worker.process.pid], sandbox, names[:1], count,
                                                f"igsend (defaults), round {index + 1}")
                        pairs.append((bare_row["cpu_per_1000"], igsend_row["cpu_per_1000"]))
                        print(f"round {index + 1}: bare POST {pairs[-1][0]:.2f} ms, igsend {pairs[-1][1]:.2f} ms = "
                              f"{pairs[-1][1] / pairs[-1][0]:.2f}x", flush=True)
            many, loop = bench_enqueue(2000 if small else 20000)

    naive, ceiling, featureless, igsend = rows
    print()
    print(f"{'variant':<32} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} {'peak RSS MB':>12}")
    for row in rows + by_accounts + sampled:
        print(format_row(row))
    bare = ceiling["cpu_per_1000"]
    print(f"bare POST CPU/msg (ceiling, client side)   = {bare:.2f} ms")
    print(f"featureless Celery / bare POST (CPU/msg)   = {featureless['cpu_per_1000'] / bare:.2f}x")
    print(f"igsend / bare POST (CPU/msg)               = {igsend['cpu_per_1000'] / bare:.2f}x   (target <= 1.4x)")
    if pairs:
        ratios = sorted([igsend["cpu_per_1000"] / bare] + [mine / theirs for theirs, mine in pairs])
        print(f"igsend / bare POST over {len(ratios)} rounds (the table's, then each pair): "
              f"{', '.join(f'{ratio:.2f}x' for ratio in ratios)}; median = {statistics.median(ratios):.2f}x")
    print(f"igsend / featureless Celery (CPU/msg)      = {igsend['cpu_per_1000'] / featureless['cpu_per_1000']:.2f}x")
    print(f"tracing on / off (CPU/msg)                 = {traced['cpu_per_1000'] / igsend['cpu_per_1000']:.2f}x   "
          "(OTLP/HTTP to a local sink, every trace kept)")
    print(f"tracing 10 % sampled / off (CPU/msg)       = "
          f"{traced_tenth['cpu_per_1000'] / igsend['cpu_per_1000']:.2f}x   (parentbased_traceidratio 0.1)")
    print(f"igsend/naive   = {igsend['rate'] / naive['rate']:.1f}x   (target >= 25x)")
    print(f"igsend/ceiling = {igsend['rate'] / ceiling['rate'] * 100:.0f}%   (target >= 65%)")
    for line in format_redis(redis_figures):
        print(line)
    print("  (targets, issue 36: <= 23.4 commands and <= 0.24 s of Redis CPU per 1,000 delivered messages)")
    print(f"enqueue: send_many {many:,.0f} msgs/s vs send_text loop {loop:,.0f} msgs/s "
          f"= {many / loop:.1f}x   (target send_many >= 5,000/s)")
    print(f"worker peak RSS {igsend['rss_mb']:.0f} MB (target < 300 MB)")
    return 0


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes every export and keeps nothing (its CPU is this process's, not counted)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _account_tokens(tmp: Path) -> list[str]:
    import tomllib

    accounts = tomllib.loads((tmp / "accounts.toml").read_text())["accounts"]
    return [spec["token"] for spec in accounts.values()]
