"""`ops/bench memory`: the Redis bytes and keys each message leaves behind, by outcome."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import requests

from ops.bench_common import stack, wait_all


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
