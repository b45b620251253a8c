"""`ops/bench rate`: one account per login kind at Meta's real budget, its rate and throttling errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import requests

from ops.bench_common import stack, wait_all


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
