"""`ops/bench sizing` and `ops/bench pod`: msgs/s, CPU and memory of one worker container of N processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ops.bench_common import LATENCY_MS, igsend_worker, reset_sandbox, run_igsend, stack

#: Seconds of backlog one pod is meant to hold before KEDA adds another: listLength = per-pod msgs/s x this.
DRAIN_SECONDS = 30


def containers(processes: Iterable[int], *, accounts: int, count: int) -> Iterator[tuple[int, dict, int]]:
    """On one stack, for each N of ``processes``: ``igsend worker --processes N`` (64 threads each) sends ``count``
    messages over ``accounts`` accounts (budget 1,000,000/s, sandbox at LATENCY_MS). Yields N, the run's row
    (run_igsend) and the worker's RSS once started, before any message (bytes)."""
    import psutil

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp, accounts=accounts, budget=1_000_000, workers=0, latency_ms=LATENCY_MS,
                   concurrency=None) as (redis_url, sandbox, names):
            for n in processes:
                reset_sandbox(sandbox)
                with igsend_worker(tmp, redis_url, sandbox, processes=n, log_name=f"worker-{n}.log") as worker:
                    idle_rss = psutil.Process(worker.process.pid).memory_info().rss
                    row = run_igsend([worker.process.pid], sandbox, names, count, f"sizing {n}")
                yield n, row, idle_rss


def cores_busy(row: dict) -> float:
    """The cores a run kept busy: msgs/s x CPU seconds per message."""
    return row["rate"] * row["cpu_per_1000"] / 1000


def bench_sizing(small: bool) -> int:
    """``igsend worker --processes N`` for N = 1, 2, 4 on this machine: what one container of N processes
    delivers, and what each message costs it, to size a deployment."""
    count = 300 if small else 4000
    print(f"ops/bench sizing: igsend worker --processes N (64 threads each), {count} messages, 1 account "
          f"(budget 1,000,000/s), sandbox latency {LATENCY_MS} ms, {os.cpu_count()} cores")
    print(f"{'processes':<10} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/msg':>11} {'cores busy':>11} "
          f"{'peak RSS MB':>12}")
    for processes, row, _ in containers((1, 2, 4), accounts=1, count=count):
        print(f"{processes:<10} {row['rate']:>8.1f} {row['p50']:>8.0f} {row['p99']:>8.0f} "
              f"{row['cpu_per_1000']:>11.2f} {cores_busy(row):>11.2f} {row['rss_mb']:>12.0f}", flush=True)
    return 0


def bench_pod(small: bool) -> int:
    """What one worker pod (``igsend worker`` with IGSEND_PROCESSES=1, 64 threads) sends, at what CPU and memory:
    the sizing run with one process, over 10 accounts, and the figures behind ops/k8s (resources, KEDA's
    listLength; docs/kubernetes.md)."""
    count = 500 if small else 5000
    [(_, row, idle_rss)] = containers((1,), accounts=10, count=count)
    print(f"ops/bench pod: one worker process, 64 threads, sandbox latency {LATENCY_MS} ms, {count:,} messages, "
          f"{os.cpu_count()} cores shared with Redis and the sandbox")
    print(f"{'msgs/s':>8} {'CPU s/1k':>9} {'CPU cores':>10} {'idle RSS MB':>12} {'peak RSS MB':>12}")
    print(f"{row['rate']:>8.1f} {row['cpu_per_1000']:>9.2f} {cores_busy(row):>10.2f} {idle_rss / 2**20:>12.0f} "
          f"{row['rss_mb']:>12.0f}")
    print(f"KEDA listLength = {row['rate']:.0f} msgs/s x {DRAIN_SECONDS} s = {row['rate'] * DRAIN_SECONDS:,.0f}")
    return 0
