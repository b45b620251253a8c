"""Benchmarks behind ``ops/bench``: each starts its own Redis, sandbox and workers, measures, prints a table.

    ops/bench rate          # 3 workers, 3 accounts at 20 text/s each, 600 messages per account
    ops/bench rate --small  # the same, scaled down (what the test suite runs)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.embedded_redis import start_redis  # noqa: E402
from workers.processes import Service, start_sandbox, start_worker  # noqa: E402


@contextlib.contextmanager
def stack(tmp: Path, *, accounts: int, budget: float, workers: int, latency_ms: float, concurrency: int | None,
          worker_env: dict[str, str] | None = None):
    """Redis + sandbox (enforcing ``budget`` text/s per account) + ``workers`` worker processes."""
    redis = start_redis(tmp / "redis")
    services: list[Service] = []
    tokens = [f"bench-token-{i}-{os.urandom(8).hex()}" for i in range(accounts)]
    try:
        sandbox = start_sandbox(tokens=tokens, latency_ms=latency_ms, rate_limit=budget,
                                media_rate_limit=max(1.0, budget / 30), log_path=tmp / "sandbox.log")
        services.append(sandbox)
        accounts_file = tmp / "accounts.toml"
        accounts_file.write_text("".join(
            f'[accounts.acct{i}]\nid = "1784140000000{i:04d}"\ntoken = "{token}"\n'
            f"[accounts.acct{i}.limits]\ntext_per_second = {budget}\n\n" for i, token in enumerate(tokens)))
        env = {"IGSEND_REDIS_URL": redis.url, "IGSEND_GRAPH_URL": sandbox.url,
               "IGSEND_ACCOUNTS_FILE": str(accounts_file), "IGSEND_ACCESS_TOKEN": "", **(worker_env or {})}
        for index in range(workers):
            services.append(start_worker(env=env, log_path=tmp / f"worker{index}.log", concurrency=concurrency))
        os.environ["IGSEND_REDIS_URL"] = redis.url
        yield redis.url, sandbox.url, [f"acct{i}" for i in range(accounts)]
    finally:
        for service in reversed(services):
            service.stop()
        redis.stop()


def wait_all(jobs, timeout: float) -> dict[str, int]:
    from producers.store import get_redis, job_key

    redis = get_redis()
    deadline = time.monotonic() + timeout
    while True:
        pipe = redis.pipeline(transaction=False)
        for job in jobs:
            pipe.hget(job_key(job.id), "status")
        statuses = pipe.execute()
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        finished = sum(counts.get(s, 0) for s in ("delivered", "dead", "unknown"))
        if finished == len(jobs) or time.monotonic() > deadline:
            return counts
        time.sleep(0.25)


def bench_rate(small: bool) -> int:
    per_account = 60 if small else 600
    budget = 20.0
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=3, budget=budget, workers=3,
                                                     latency_ms=50, concurrency=32) as (_, sandbox, names):
        from producers import send_many

        documents = [{"kind": "text", "recipient": f"r{i}", "text": f"bench {name} #{i}", "account": name}
                     for i in range(per_account) for name in names]
        started = time.monotonic()
        batch = send_many(documents)
        counts = wait_all(batch.queued, timeout=per_account / budget * 3 + 60)
        elapsed = time.monotonic() - started
        stats = requests.get(f"{sandbox}/_sandbox/stats", timeout=10).json()
        messages = requests.get(f"{sandbox}/_sandbox/messages", timeout=30).json()["messages"]

    print(f"ops/bench rate: 3 worker processes, {len(names)} accounts, budget {budget:.0f} text/s each, "
          f"{per_account} messages per account, sandbox latency 50 ms")
    print(f"{'account':<10} {'sent':>6} {'span s':>8} {'rate/s':>8} {'% budget':>9} {'worst 1 s':>10}")
    worst_percent = 100.0
    by_account: dict[str, list[float]] = {}
    for message in messages:
        by_account.setdefault(message["account"], []).append(message["received_at"])
    for index, times in enumerate(sorted(by_account.values(), key=len, reverse=True)):
        times.sort()
        span = times[-1] - times[0]
        rate = (len(times) - 1) / span if span > 0 else float("inf")
        peak = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        percent = rate / budget * 100
        worst_percent = min(worst_percent, percent)
        print(f"{'acct' + str(index):<10} {len(times):>6} {span:>8.2f} {rate:>8.2f} {percent:>8.1f}% {peak:>10}")
    print(f"throttling errors returned by the sandbox: {stats['throttled']}")
    print(f"outcomes: {counts}; wall time {elapsed:.1f} s")
    ok = stats["throttled"] == 0 and counts.get("delivered") == len(documents) and worst_percent >= 95
    print("target (every account 95-100 % of budget, zero throttling errors):", "MET" if ok else "MISSED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["rate"])
    parser.add_argument("--small", action="store_true", help="scaled-down counts (CI)")
    args = parser.parse_args(argv)
    return bench_rate(args.small)


if __name__ == "__main__":
    sys.exit(main())
