"""`ops/bench sizing` and `ops/bench pod`: msgs/s, CPU and memory of one worker container of N processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from igsend.local.processes import start_worker
from ops.bench_common import LATENCY_MS, reset_sandbox, run_igsend, stack

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
