"""`ops/bench sweep`: what one lost-message sweep costs beside a deep backlog."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from igsend.core.store import forget_connections
from igsend.local.embedded_redis import start_redis


def bench_sweep(queued: int) -> int:
    """What one sweeper pass costs beside a deep backlog: time and Redis commands, with and without losses."""
    import json
    import statistics

    from igsend.core.celery_app import queue_keys
    from igsend.core.store import get_redis
    from producers import send_many
    from workers.scheduler import Scheduler
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
            client = get_redis()
            # as a leader hands the lanes' backlog to busy workers; a chunk per message, so that the ten taken off
            # the queue below are ten messages (a chunk's jobs would be republished together)
            dispatcher = Scheduler(client, ahead=queued, chunk=1)
            while dispatcher.dispatch():
                pass
            print(f"ops/bench sweep: {queued:,} messages queued in {time.monotonic() - started:.1f} s, no worker")
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
