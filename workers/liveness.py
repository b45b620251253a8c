"""Whether a worker can still consume: a file its consumer touches, and the probe that reads it.

A process that exists is not a worker that works: its broker connection may be gone (Celery then retries
forever), its event loop may be stuck, or its consumer of the ``igsend`` queue may have been cancelled
(``celery control cancel_consumer``). :class:`LivenessStep`, a step of Celery's consumer blueprint, touches
``IGSEND_LIVENESS_FILE`` every :data:`TOUCH_EVERY` seconds from the consumer's own event loop, and only while
the consumer is connected and subscribed to the queue. Celery stops the step when the connection is lost
(the consumer blueprint restarts), so the file then ages.

``python -m workers.liveness [--max-age S]`` is the probe (Kubernetes' liveness and startup probes): exit 0
when the file was touched within ``S`` seconds (default :data:`MAX_AGE`), 1 otherwise, with one line saying
why. It reads a file and nothing else: no broker round trip per probe and per pod. When ``igsend worker``
runs several processes, process *i* touches ``FILE.i`` and the probe wants every one of them fresh.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import bootsteps

ENV = "IGSEND_LIVENESS_FILE"
#: Seconds between two touches.
TOUCH_EVERY = 5.0
#: Default age (seconds) past which the probe says the worker no longer consumes: longer than a Sentinel
#: failover or a Redis restart, which a worker rides out without help.
MAX_AGE = 60.0


def touch(path: str) -> None:
    Path(path).touch()


def problem(path: str, max_age: float, now: float | None = None) -> str | None:
    """Why the worker(s) writing ``path`` are not consuming, or None when they are."""
    files = [path] if os.path.exists(path) else sorted(glob.glob(f"{glob.escape(path)}.[0-9]*"))
    if not files:
        return f"{path} does not exist: the worker has not started consuming"
    now = time.time() if now is None else now
    for name in files:
        try:
            age = now - os.stat(name).st_mtime
        except FileNotFoundError:
            return f"{name} disappeared"
        if age > max_age:
            return f"{name} was last touched {age:.0f} s ago (more than {max_age:g} s): the worker does not consume"
    return None


class LivenessStep(bootsteps.StartStopStep):
    """Touch the liveness file while the consumer consumes the igsend queue (a no-op when it is not set)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = os.environ.get(ENV) or None
        self.tref: Any = None
        self.first: Any = None

    def start(self, parent: Any) -> None:
        if not self.path:
            return
        from igsend.core.celery_app import QUEUE

        path = self.path

        def beat() -> None:
            consumer = parent.task_consumer
            connection = parent.connection
            if (connection is not None and connection.connected and consumer is not None
                    and consumer.consuming_from(QUEUE)):
                touch(path)

        # The consumer's timer: with Redis it is fired by the consumer's event loop itself, so a stuck loop
        # stops the touches too. The first touch once the loop runs (it subscribes to the queue as it starts).
        self.first = parent.timer.call_after(0.1, beat)
        self.tref = parent.timer.call_repeatedly(TOUCH_EVERY, beat)

    def stop(self, parent: Any) -> None:
        for tref in (self.first, self.tref):
            if tref is not None:
                tref.cancel()
        self.first = self.tref = None

    shutdown = stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.liveness",
                                     description="Exit 0 while the worker consumes the igsend queue, 1 otherwise.")
    parser.add_argument("--file", default=os.environ.get(ENV), help=f"the file the worker touches [{ENV}]")
    parser.add_argument("--max-age", type=float, default=MAX_AGE, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.file:
        print(f"igsend liveness: set {ENV} (or --file)", file=sys.stderr)
        return 2
    why = problem(args.file, args.max_age)
    if why:
        print(f"igsend liveness: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
