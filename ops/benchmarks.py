"""Benchmarks behind ``ops/bench``: each starts its own Redis, sandbox and workers, measures, prints a table.

    ops/bench rate               # 3 workers; an Instagram-Login account (100/s) and a Facebook-Login one (300/s)
                                 # at Meta's real budgets, 20 s of traffic each
    ops/bench throughput         # naive Celery vs a bare thread pool vs featureless Celery vs igsend, 5,000
                                 # messages at 100 ms; CPU per message, Redis commands/bytes/CPU per message
                                 # (--rounds 5: then four more pairs of the bare POST and igsend, and the median
                                 # of the five CPU ratios)
    ops/bench sizing             # igsend worker --processes 1, 2, 4: msgs/s and CPU per message
    ops/bench sweep              # the lost-message sweep's cost over 100,000 queued messages
    ops/bench memory             # Redis bytes and keys each message leaves behind: delivered, dead, waiting
    ops/bench ordered            # 200 conversations x 5 messages, ordered and unordered, side by side
    ops/bench console            # the console's dead-letter pages over a 100,000-entry DLQ (first, filtered, deep)
    ops/bench pod                # one worker process (a Kubernetes pod): msgs/s, CPU, RSS, KEDA's listLength
    ops/bench fairness           # FIFO (a raw Celery publish) vs lanes: B's replies behind A's campaign,
                                 # saturated accounts, an idle account's reply, bulk and private replies ahead
    ops/bench dispatch           # the dispatcher's cost per message with 10, 1,000 and 10,000 accounts holding a
                                 # backlog; bytes per waiting message in a lane and on the Celery queue
    ops/bench waiters            # GET ?wait=30 held at once by one API process (24, 250, 1,000): Redis connections
                                 # and commands, RSS, a plain GET meanwhile, the wakeup after each job's end
    ops/bench callbacks          # sending with no callback endpoint, a healthy one, one that never answers: msgs/s,
                                 # CPU per message; callbacks received and how long after the last delivery
                                 # (--rounds 3: two more pairs without / never answering, alternating)
    ops/bench rate --small       # scaled down, no targets enforced (what the test suite runs)
    ops/bench throughput --small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.bench_callbacks import bench_callbacks  # noqa: E402
from ops.bench_console import bench_console  # noqa: E402
from ops.bench_dispatch import bench_dispatch  # noqa: E402
from ops.bench_fairness import bench_fairness  # noqa: E402
from ops.bench_memory import bench_memory  # noqa: E402
from ops.bench_ordered import bench_ordered  # noqa: E402
from ops.bench_rate import bench_rate  # noqa: E402
from ops.bench_sizing import bench_pod, bench_sizing  # noqa: E402
from ops.bench_sweep import bench_sweep  # noqa: E402
from ops.bench_throughput import bench_throughput  # noqa: E402
from ops.bench_waiters import bench_waiters  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["rate", "throughput", "sweep", "memory", "ordered", "console", "pod",
                                          "sizing", "fairness", "dispatch", "waiters", "callbacks"])
    parser.add_argument("--small", action="store_true", help="scaled-down counts, targets not enforced (CI)")
    parser.add_argument("--groups", action="store_true", help="console: two Redis groups (IGSEND_GROUPS)")
    parser.add_argument("--rounds", type=int, default=1, help="callbacks: then N-1 more pairs of rows without "
                        "callbacks and with the endpoint that never answers, alternating; throughput: then N-1 more "
                        "pairs of the bare POST and igsend, and the median of the CPU ratios")
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
    if args.which == "fairness":
        return bench_fairness(args.small)
    if args.which == "dispatch":
        return bench_dispatch(args.small)
    if args.which == "waiters":
        return bench_waiters(args.small)
    if args.which == "callbacks":
        return bench_callbacks(args.small, args.rounds)
    return bench_throughput(args.small, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
