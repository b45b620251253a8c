"""`ops/bench dispatch`: what handing one message out of the lanes costs with 10 to 10,000 accounts holding a
backlog, and what a waiting message costs in Redis memory, in its lane against on the Celery queue."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from igsend.core.store import forget_connections
from igsend.local.embedded_redis import start_redis


def _eval_usec(client) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Redis's own microseconds and calls of Lua scripts so far (INFO commandstats)."""
    stats = client.info("commandstats")
    usec = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return usec, calls


def bench_dispatch(small: bool) -> int:
    """For each number of accounts with a backlog: Redis time of the dispatcher's script and the leader's CPU per
    message handed out (the script, reading the record, the Celery publish), and bytes per waiting message."""
    from igsend.core import lanes
    from igsend.core.celery_app import queue_keys
    from igsend.core.chunks import job_ids_in
    from igsend.core.store import get_redis
    from producers import send_many
    from workers.scheduler import Scheduler

    total = 4_000 if small else 20_000
    sizes = (10, 100, 1_000) if small else (10, 1_000, 10_000)
    print(f"ops/bench dispatch: {total:,} waiting messages spread over N accounts, one Redis, no worker (the leader's "
          "dispatch step run in this process)")
    print(f"{'accounts with a backlog':<24} {'Redis us/msg':>13} {'leader CPU us/msg':>18} {'bytes/msg in lanes':>19} "
          f"{'bytes/msg on Celery queue':>26}")
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            os.environ["IGSEND_REDIS_URL"] = redis.url
            forget_connections()
            client = get_redis()
            for accounts in sizes:
                client.flushdb()
                baseline = int(client.info("memory")["used_memory"])
                for start in range(0, total, 1000):
                    send_many([{"kind": "text", "recipient": f"r{i}", "text": "hello there",
                                "account": f"a{i % accounts}", "priority": "bulk" if i % 2 else "normal"}
                               for i in range(start, min(total, start + 1000))])
                waiting = lanes.waiting_total(client)
                in_lanes = int(client.info("memory")["used_memory"]) - baseline
                dispatcher = Scheduler(client, ahead=total + 1, batch=500)
                usec0, _ = _eval_usec(client)
                cpu0 = time.process_time()
                handed = 0
                while True:
                    moved = dispatcher.dispatch()
                    if not moved:
                        break
                    handed += moved
                cpu = time.process_time() - cpu0
                usec, _ = _eval_usec(client)
                # jobs on the Celery queue: a chunk (igsend.core.chunks) names its jobs in a header
                queued = sum(len(job_ids_in(json.loads(raw))) for key in queue_keys()
                             for raw in client.lrange(key, 0, -1))
                on_queue = int(client.info("memory")["used_memory"]) - baseline
                if handed != total or queued != total or waiting != total:
                    print(f"expected {total} waiting, handed out and queued; got {waiting}, {handed}, {queued}")
                    return 1
                print(f"{accounts:<24,} {(usec - usec0) / handed:>13.1f} {cpu / handed * 1e6:>18.1f} "
                      f"{in_lanes / total:>19.0f} {on_queue / total:>26.0f}")
        finally:
            redis.stop()
    return 0
