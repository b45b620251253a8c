"""`ops/bench ordered`: what ordering costs, the same conversations sent unordered and ordered."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import requests

from ops.bench_common import reset_sandbox, stack, wait_sandbox_count


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
