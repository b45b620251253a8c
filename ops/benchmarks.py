"""Benchmarks behind ``ops/bench``: each starts its own Redis, sandbox and workers, measures, prints a table.

    ops/bench rate               # 3 workers; an Instagram-Login account (100/s) and a Facebook-Login one (300/s)
                                 # at Meta's real budgets, 20 s of traffic each
    ops/bench throughput         # naive Celery vs a bare thread pool vs featureless Celery vs igsend, 5,000
                                 # messages at 100 ms; CPU per message, Redis commands/bytes/CPU per message
    ops/bench sizing             # igsend worker --processes 1, 2, 4: msgs/s and CPU per message
    ops/bench sweep              # the lost-message sweep's cost over 100,000 queued messages
    ops/bench memory             # Redis bytes and keys each message leaves behind: delivered, dead, waiting
    ops/bench ordered            # 200 conversations x 5 messages, ordered and unordered, side by side
    ops/bench console            # the console's dead-letter pages over a 100,000-entry DLQ (first, filtered, deep)
    ops/bench pod                # one worker process (a Kubernetes pod): msgs/s, CPU, RSS, KEDA's listLength
    ops/bench rate --small       # scaled down, no targets enforced (what the test suite runs)
    ops/bench throughput --small
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from igsend.core.store import forget_connections  # noqa: E402
from igsend.local.embedded_redis import start_redis  # noqa: E402
from igsend.local.processes import start_worker  # noqa: E402
from ops.bench_common import (  # noqa: E402
    LATENCY_MS,
    ProcessMeter,
    format_redis,
    format_row,
    make_row,
    reset_sandbox,
    run_igsend,
    stack,
    wait_all,
    wait_sandbox_count,
    wire_latencies,
)


def bench_rate(small: bool) -> int:
    """Each login kind at Meta's real budget: Instagram Login 100 text/s, Facebook Login 300 text/s."""
    from workers.accounts import default_rate

    seconds = 3 if small else 20
    print(f"ops/bench rate: one account per login kind at Meta's budget, one after the other (both at once "
          f"would be 400 msgs/s, more than 2 cores carry), {seconds} s of traffic each, 2 worker processes, "
          "sandbox latency 50 ms, task events off")
    print(f"{'login':<10} {'budget':>7} {'sent':>6} {'span s':>8} {'rate/s':>8} {'% budget':>9} {'worst 1 s':>10} "
          f"{'throttled':>10}")
    ok = True
    for login in ("instagram", "facebook"):
        budget = default_rate("text", login)
        with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=1, budget=None, workers=2,
                                                         latency_ms=50, concurrency=64, logins=[login],
                                                         worker_env={"IGSEND_TASK_EVENTS": "0"}) as (
                _, sandbox, names):
            from producers import send_many

            documents = [{"kind": "text", "recipient": f"r{i}", "text": f"bench #{i}", "account": names[0]}
                         for i in range(int(budget * seconds))]
            batch = send_many(documents)
            counts = wait_all(batch.queued, timeout=seconds * 3 + 60)
            stats = requests.get(f"{sandbox}/_sandbox/stats", timeout=10).json()
            messages = requests.get(f"{sandbox}/_sandbox/messages", timeout=60).json()["messages"]
        times = sorted(m["received_at"] for m in messages) or [0.0]
        span = times[-1] - times[0]
        rate = (len(times) - 1) / span if span > 0 else float("inf")
        peak = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        percent = rate / budget * 100
        print(f"{login:<10} {budget:>7.0f} {len(times):>6} {span:>8.2f} {rate:>8.2f} {percent:>8.1f}% {peak:>10} "
              f"{stats['throttled']:>10}")
        ok = ok and stats["throttled"] == 0 and counts.get("delivered") == len(documents) and percent >= 95
    print("target (each login kind 95-100 % of its budget, zero throttling errors):", "MET" if ok else "MISSED")
    return 0 if ok else 1


def bench_memory(count: int) -> int:
    """What each message leaves in Redis once the work is done, by outcome: bytes (INFO used_memory) and keys."""
    import json
    from collections import Counter

    from igsend.core.store import get_redis
    from producers import send_many

    def snapshot() -> tuple[int, Counter]:
        """used_memory minus the outcome stream (bounded by its cap, not by the number of messages)."""
        client = get_redis()
        prefixes: Counter = Counter()
        for key in client.scan_iter(count=1000):
            parts = key.split(":")
            prefix = ":".join(parts[:2]) if key.startswith("igsend:") else key.split("-")[0] + "-" + \
                (key.split("-")[1] if "-" in key else "")
            if key.startswith("igsend:job:") and key.endswith(":attempts"):
                prefix = "igsend:job:*:attempts"
            prefixes[prefix] += 1
        stream = client.memory_usage("igsend:outcomes") or 0
        return int(client.info("memory")["used_memory"]) - stream, prefixes

    rows = []
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=1, budget=1000, workers=1,
                                                     latency_ms=0, concurrency=None) as (_, sandbox, names):
        batches = [("delivered", [f"ok{i}" for i in range(count)]),
                   ("dead-lettered", [f"ERR_100_2018001x{i}" for i in range(count // 10)])]
        requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "ERR_100_2018001x0", "faults": []}, timeout=5)
        base_bytes, base_keys = snapshot()
        for label, recipients in batches:
            faults = [{"recipient": r, "faults": [{"code": 100, "subcode": 2018001, "sticky": True}]}
                      for r in recipients if r.startswith("ERR")]
            for fault in faults:
                requests.post(f"{sandbox}/_sandbox/faults", json=fault, timeout=5)
            jobs = []
            for start in range(0, len(recipients), 1000):
                jobs += send_many([{"kind": "text", "recipient": r, "text": "memory bench " + "x" * 40,
                                    "account": names[0]} for r in recipients[start:start + 1000]]).queued
            wait_all(jobs, timeout=600)
            time.sleep(1.0)
            after_bytes, after_keys = snapshot()
            added = {k: after_keys[k] - base_keys.get(k, 0) for k in after_keys if after_keys[k] != base_keys.get(k, 0)}
            rows.append((label, len(recipients), (after_bytes - base_bytes) / len(recipients),
                         sum(added.values()) / len(recipients), added))
            base_bytes, base_keys = after_bytes, after_keys
    # Waiting messages: no worker at all.
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=1, budget=1000, workers=0,
                                                     latency_ms=0, concurrency=None) as (_, _sandbox, names):
        base_bytes, base_keys = snapshot()
        for start in range(0, count, 1000):
            send_many([{"kind": "text", "recipient": f"w{i}", "text": "memory bench " + "x" * 40, "account": names[0]}
                       for i in range(start, min(count, start + 1000))])
        after_bytes, after_keys = snapshot()
        added = {k: after_keys[k] - base_keys.get(k, 0) for k in after_keys if after_keys[k] != base_keys.get(k, 0)}
        rows.append(("waiting (no worker)", count, (after_bytes - base_bytes) / count,
                     sum(added.values()) / count, added))
    print("ops/bench memory: text messages of 53 characters through one worker on its defaults; bytes are "
          "INFO used_memory per message, without the outcome stream (capped at ~10,000 entries in all)")
    print(f"{'outcome':<22} {'messages':>9} {'bytes each':>11} {'keys each':>10}  keys by prefix")
    for label, n, per_bytes, per_keys, added in rows:
        print(f"{label:<22} {n:>9} {per_bytes:>11.0f} {per_keys:>10.2f}  {json.dumps(added)}")
    return 0


def bench_sweep(queued: int) -> int:
    """What one sweeper pass costs beside a deep backlog: time and Redis commands, with and without losses."""
    import json
    import statistics

    from igsend.core.celery_app import queue_keys
    from igsend.core.store import get_redis
    from producers import send_many
    from workers.sweeper import Sweeper

    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            os.environ["IGSEND_REDIS_URL"] = redis.url
            forget_connections()
            started = time.monotonic()
            for start in range(0, queued, 1000):
                send_many([{"kind": "text", "recipient": f"r{i}", "text": "x"}
                           for i in range(start, min(queued, start + 1000))])
            print(f"ops/bench sweep: {queued:,} messages queued in {time.monotonic() - started:.1f} s, no worker")
            client = get_redis()
            sweeper = Sweeper(client, lost_after=0)

            def timed() -> tuple[float, int, int]:
                before = client.info("commandstats")
                t0 = time.perf_counter()
                found = len(sweeper.sweep().republished)
                took = time.perf_counter() - t0
                after = client.info("commandstats")
                calls = sum(after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after) - 1
                return took, calls, found

            quiet = [timed() for _ in range(20)]
            print(f"{'pass':<34} {'median ms':>10} {'commands':>9} {'republished':>12}")
            print(f"{'nothing lost (20 passes)':<34} {statistics.median(t for t, _, _ in quiet) * 1000:>10.2f} "
                  f"{quiet[0][1]:>9} {quiet[0][2]:>12}")
            for _ in range(10):  # ten messages taken off the queue's oldest end and never recorded
                for key in queue_keys():
                    if client.rpop(key):
                        break
            took, calls, found = timed()
            print(f"{'10 lost among the oldest':<34} {took * 1000:>10.2f} {calls:>9} {found:>12}")
            depth = sum(client.llen(key) for key in queue_keys())
            print(json.dumps({"queued_after": depth, "expected": queued}))
            return 0 if found == 10 and depth == queued else 1
        finally:
            redis.stop()


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
        url = f"{sandbox}/v25.0/17841400000000000/messages"
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
    url = f"{sandbox}/v25.0/17841400000000000/messages"
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


def bench_ordered(small: bool) -> int:
    """What ordering costs: the same conversations (each one's messages enqueued together, as a chatbot's answer
    is) sent unordered and ordered, alternately, on one stack; ordered should take at most ~1.3x."""
    from producers import send_many

    conversations, per, rounds = (40, 5, 1) if small else (200, 5, 3)
    count = conversations * per
    print(f"ops/bench ordered: {conversations} conversations x {per} messages, unordered then ordered, {rounds} "
          "round(s); 1 account (budget 2,000/s, so the rate limit is not what is measured), 2 worker processes x "
          "64 threads, sandbox latency 50 ms, task events off")
    print(f"{'run':<12} {'messages':>9} {'seconds':>8} {'msgs/s':>8} {'in order':>9}")
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=1, budget=2000, workers=2, latency_ms=50,
                                                     concurrency=64, worker_env={"IGSEND_TASK_EVENTS": "0"}) as (
            _, sandbox, names):
        for round_ in range(rounds):
            for ordered in (False, True):
                reset_sandbox(sandbox)
                documents = [{"kind": "text", "recipient": f"r{round_}-{c}", "text": str(i), "account": names[0],
                              "ordered": ordered} for c in range(conversations) for i in range(1, per + 1)]
                started = time.time()
                send_many(documents)
                wait_sandbox_count(sandbox, count, timeout=120)
                messages = requests.get(f"{sandbox}/_sandbox/messages", timeout=60).json()["messages"]
                elapsed = max(m["received_at"] for m in messages) - started
                times[ordered].append(elapsed)
                seen: dict[str, list[str]] = {}
                for message in sorted(messages, key=lambda m: m["received_at"]):
                    seen.setdefault(message["body"]["recipient"]["id"], []).append(message["body"]["message"]["text"])
                in_order = sum(texts == [str(i) for i in range(1, per + 1)] for texts in seen.values())
                label = "ordered" if ordered else "unordered"
                print(f"{label:<12} {count:>9} {elapsed:>8.2f} {count / elapsed:>8.0f} {in_order:>5}/{len(seen)}")
                if ordered and in_order != conversations:
                    print("an ordered conversation arrived out of order: MISSED")
                    return 1
    ratio = sorted(times[True])[len(times[True]) // 2] / sorted(times[False])[len(times[False]) // 2]
    print(f"ordered / unordered (medians): {ratio:.2f}x  target <= 1.3x:", "MET" if ratio <= 1.3 else "MISSED")
    return 0 if ratio <= 1.3 or small else 1


def bench_enqueue(count: int) -> tuple[float, float]:
    from igsend.core.store import get_redis
    from producers import send_many, send_text

    documents = [{"kind": "text", "recipient": f"r{i}", "text": f"enqueue {i}"} for i in range(count)]
    # A Redis no worker registered in (the throughput run's workers served acct*, not "default"): producers
    # would refuse "default" as an account no worker knows (igsend.core.presence).
    get_redis().flushdb()
    started = time.perf_counter()
    for start in range(0, count, 1000):
        send_many(documents[start:start + 1000])
    many = count / (time.perf_counter() - started)
    get_redis().flushdb()
    started = time.perf_counter()
    for document in documents:
        send_text(document["recipient"], document["text"])
    loop = count / (time.perf_counter() - started)
    get_redis().flushdb()
    return many, loop


def bench_throughput(small: bool) -> int:
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
            env = {"IGSEND_REDIS_URL": redis_url, "IGSEND_GRAPH_URL": sandbox,
                   "IGSEND_ACCOUNTS_FILE": str(tmp / "accounts.toml"), "IGSEND_ACCESS_TOKEN": ""}
            worker = start_worker(env=env, log_path=tmp / "igsend-worker.log",
                                  processes=int(os.environ.get("IGSEND_PROCESSES") or os.cpu_count() or 1))
            try:
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
            finally:
                worker.stop()
            many, loop = bench_enqueue(2000 if small else 20000)

    naive, ceiling, featureless, igsend = rows
    print()
    print(f"{'variant':<32} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} {'peak RSS MB':>12}")
    for row in rows + by_accounts:
        print(format_row(row))
    bare = ceiling["cpu_per_1000"]
    print(f"bare POST CPU/msg (ceiling, client side)   = {bare:.2f} ms")
    print(f"featureless Celery / bare POST (CPU/msg)   = {featureless['cpu_per_1000'] / bare:.2f}x")
    print(f"igsend / bare POST (CPU/msg)               = {igsend['cpu_per_1000'] / bare:.2f}x   (target <= 1.7x)")
    print(f"igsend / featureless Celery (CPU/msg)      = {igsend['cpu_per_1000'] / featureless['cpu_per_1000']:.2f}x")
    print(f"igsend/naive   = {igsend['rate'] / naive['rate']:.1f}x   (target >= 25x)")
    print(f"igsend/ceiling = {igsend['rate'] / ceiling['rate'] * 100:.0f}%   (target >= 60%)")
    for line in format_redis(redis_figures):
        print(line)
    print(f"enqueue: send_many {many:,.0f} msgs/s vs send_text loop {loop:,.0f} msgs/s "
          f"= {many / loop:.1f}x   (target send_many >= 5,000/s)")
    print(f"worker peak RSS {igsend['rss_mb']:.0f} MB (target < 300 MB)")
    return 0


#: Seconds of backlog one pod is meant to hold before KEDA adds another: listLength = per-pod msgs/s x this.
DRAIN_SECONDS = 30


def bench_pod(small: bool) -> int:
    """What one worker pod (``igsend worker`` with IGSEND_PROCESSES=1, 64 threads) sends, at what CPU and memory:
    the figures behind ops/k8s (resources, KEDA's listLength; docs/kubernetes.md)."""
    count = 500 if small else 5000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp, accounts=10, budget=1_000_000, workers=0, latency_ms=LATENCY_MS,
                   concurrency=None) as (redis_url, sandbox, names):
            env = {"IGSEND_REDIS_URL": redis_url, "IGSEND_GRAPH_URL": sandbox,
                   "IGSEND_ACCOUNTS_FILE": str(tmp / "accounts.toml"), "IGSEND_ACCESS_TOKEN": ""}
            worker = start_worker(env=env, log_path=tmp / "igsend-worker.log", processes=1)
            try:
                import psutil

                idle_rss = psutil.Process(worker.process.pid).memory_info().rss
                row = run_igsend([worker.process.pid], sandbox, names, count, "igsend, one process")
            finally:
                worker.stop()
    cores = row["rate"] * row["cpu_per_1000"] / 1000
    print(f"ops/bench pod: one worker process, 64 threads, sandbox latency {LATENCY_MS} ms, {count:,} messages, "
          f"{os.cpu_count()} cores shared with Redis and the sandbox")
    print(f"{'msgs/s':>8} {'CPU s/1k':>9} {'CPU cores':>10} {'idle RSS MB':>12} {'peak RSS MB':>12}")
    print(f"{row['rate']:>8.1f} {row['cpu_per_1000']:>9.2f} {cores:>10.2f} {idle_rss / 2**20:>12.0f} "
          f"{row['rss_mb']:>12.0f}")
    print(f"KEDA listLength = {row['rate']:.0f} msgs/s x {DRAIN_SECONDS} s = {row['rate'] * DRAIN_SECONDS:,.0f}")
    return 0


def bench_sizing(small: bool) -> int:
    """``igsend worker --processes N`` for N = 1, 2, 4 on this machine: what one container of N processes
    delivers, and what each message costs it, to size a deployment."""
    count = 300 if small else 4000
    print(f"ops/bench sizing: igsend worker --processes N (64 threads each), {count} messages, 1 account "
          f"(budget 1,000,000/s), sandbox latency {LATENCY_MS} ms, {os.cpu_count()} cores")
    print(f"{'processes':<10} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/msg':>11} {'cores busy':>11} "
          f"{'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp, accounts=1, budget=1_000_000, workers=0, latency_ms=LATENCY_MS,
                   concurrency=None) as (redis_url, sandbox, names):
            env = {"IGSEND_REDIS_URL": redis_url, "IGSEND_GRAPH_URL": sandbox,
                   "IGSEND_ACCOUNTS_FILE": str(tmp / "accounts.toml"), "IGSEND_ACCESS_TOKEN": ""}
            for processes in (1, 2, 4):
                reset_sandbox(sandbox)
                worker = start_worker(env=env, log_path=tmp / f"worker-{processes}.log", processes=processes)
                try:
                    row = run_igsend([worker.process.pid], sandbox, names, count, f"sizing {processes}")
                finally:
                    worker.stop()
                busy = row["rate"] * row["cpu_per_1000"] / 1000
                print(f"{processes:<10} {row['rate']:>8.1f} {row['p50']:>8.0f} {row['p99']:>8.0f} "
                      f"{row['cpu_per_1000']:>11.2f} {busy:>11.2f} {row['rss_mb']:>12.0f}", flush=True)
    return 0


def _account_tokens(tmp: Path) -> list[str]:
    import tomllib

    accounts = tomllib.loads((tmp / "accounts.toml").read_text())["accounts"]
    return [spec["token"] for spec in accounts.values()]


def bench_console(entries: int, groups: bool = False) -> int:
    """The console's dead-letter list over a DLQ of ``entries``: the first page, filtered pages and a deep page,
    each rendered by the app as a browser would get it (login, session cookie), median of 5. With ``groups``, two
    Redis groups (IGSEND_GROUPS): ``alpha`` holds 20 dead letters, ``beta`` the ``entries``, so the first page
    crosses from one group into the other and the deep page is deep in ``beta``."""
    import re
    import statistics

    from igsend.core import records
    from igsend.core.store import get_redis
    from producers.api import create_app

    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        other = start_redis(Path(tmp) / "redis-alpha") if groups else None
        prefix = "beta." if groups else ""
        try:
            os.environ["IGSEND_REDIS_URL"] = redis.url
            if other is not None:
                groups_file = Path(tmp) / "groups.toml"
                groups_file.write_text(f'[groups.alpha]\nredis_url = "{other.url}"\naccounts = ["a"]\n'
                                       f'[groups.beta]\nredis_url = "{redis.url}"\naccounts = ["b"]\n')
                os.environ["IGSEND_GROUPS"] = str(groups_file)
            os.environ["IGSEND_UI_SECRET"] = "bench-console-secret-0123456789"
            forget_connections()
            client = get_redis()
            started = time.time()
            pipe = client.pipeline(transaction=False)
            for i in range(entries):
                code, subcode, klass = [(100, 2018001, "permanent"), (10, 2534022, "permanent"),
                                        (190, 463, "account_broken"), (1, 1357046, "unknown")][i % 4]
                error = {"code": code, "subcode": subcode, "message": "refused by Meta", "fbtrace_id": f"T{i}",
                         "http_status": 400, "class": klass}
                attempt = {"attempt": 1, "at": started - entries + i, "outcome": klass, "http_status": 400,
                           "code": code, "subcode": subcode, "message": "refused by Meta", "fbtrace_id": f"T{i}"}
                account = "rare" if i % 1000 == 7 else f"account{i % 10}"
                record = {"id": f"{prefix}job-{i:06d}", "account": account, "recipient": f"r{i}", "kind": "text",
                          "status": "dead", "message": {"kind": "text", "recipient": f"r{i}", "text": "x" * 200,
                                                        "account": account}}
                records._file_dead_letter(pipe, records._dead_letter(record, [attempt], f"{klass}: refused",
                                                                     error, started - entries + i))
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
            if other is not None:  # a few in the first group, so that the first page goes on into the second
                alpha = get_redis(other.url)
                for i in range(20):
                    record = {"id": f"alpha.job-{i:06d}", "account": "a", "recipient": f"r{i}", "kind": "text",
                              "status": "dead", "message": {"kind": "text", "recipient": f"r{i}", "text": "x",
                                                            "account": "a"}}
                    apipe = alpha.pipeline(transaction=False)
                    records._file_dead_letter(apipe, records._dead_letter(record, [], "permanent: refused", None,
                                                                          started + i))
                    apipe.execute()
            mode = " --groups" if groups else ""
            print(f"ops/bench console{mode}: {entries:,} dead letters filed in {time.time() - started:.1f} s "
                  f"(Redis {client.info('memory')['used_memory_human']})")
            key = "bench-operator-key"
            web = create_app(api_keys=[key]).test_client()
            token = re.search(rb'name="csrf_token" value="([^"]+)"', web.get("/ui/login").data)
            assert token
            web.post("/ui/login", data={"api_key": key, "csrf_token": token.group(1).decode()})
            pages = [("first page", "/ui/dead-letters"),
                     ("filtered: account (1 in 10)", "/ui/dead-letters?account=account3"),
                     ("filtered: code + reason", "/ui/dead-letters?code=190&reason=account_broken"),
                     ("filtered: rare account (1 in 1,000)", "/ui/dead-letters?account=rare"),
                     ("filtered: older than 1 h", "/ui/dead-letters?age=1h"),
                     (f"deep page (from #{entries - 10_000:,})",
                      f"/ui/dead-letters?start={'beta:' if groups else ''}{entries - 10_000}"),
                     ("one entry", f"/ui/dead-letters/{prefix}job-050000")]
            if groups:
                pages.append(("one group: beta", "/ui/dead-letters?group=beta"))
            print(f"{'page':40} {'median ms':>10} {'max ms':>8} {'rows':>5}")
            worst = 0.0
            for name, path in pages:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    answer = web.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code)
                rows = answer.data.count(b'name="job_id"')
                worst = max(worst, max(times))
                print(f"{name:40} {statistics.median(times):10.1f} {max(times):8.1f} {rows:5}")
            print(f"slowest page: {worst:.0f} ms (target: under 1,000 ms a page)")
            return 0 if worst < 1000 else 1
        finally:
            redis.stop()
            if other is not None:
                other.stop()
                os.environ.pop("IGSEND_GROUPS", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["rate", "throughput", "sweep", "memory", "ordered", "console", "pod",
                                          "sizing"])
    parser.add_argument("--small", action="store_true", help="scaled-down counts, targets not enforced (CI)")
    parser.add_argument("--groups", action="store_true", help="console: two Redis groups (IGSEND_GROUPS)")
    args = parser.parse_args(argv)
    if args.which == "rate":
        code = bench_rate(args.small)
        return 0 if args.small else code
    if args.which == "memory":
        return bench_memory(1000 if args.small else 10_000)
    if args.which == "sweep":
        return bench_sweep(10_000 if args.small else 100_000)
    if args.which == "ordered":
        return bench_ordered(args.small)
    if args.which == "console":
        return bench_console(10_000 if args.small else 100_000, args.groups)
    if args.which == "pod":
        return bench_pod(args.small)
    if args.which == "sizing":
        return bench_sizing(args.small)
    return bench_throughput(args.small)


if __name__ == "__main__":
    sys.exit(main())
