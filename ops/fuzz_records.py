"""The job record's state machine, run long: ``python ops/fuzz_records.py [--examples N] [--steps N]``.

The same Hypothesis state machine as ``tests/test_record_states.py`` (the real records, their Lua scripts, the
admission, the dispatcher, the sweeper, the DLQ, and Redis restarts, held to a model after every step), with many
more examples, each drawn at random (CI's run is derandomized: the same examples every time). It starts its own
redis-server (on a free port, in a temporary directory, never a Redis already running) and stops it at the end.
Exit status 0 when every example held; 1 when one did not, with its sequence of steps (shrunk to the fewest Hypothesis
finds within its time for it) and the assertion that failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples to run (default 1000; CI runs 60)")
    parser.add_argument("--steps", type=int, default=50, help="steps per example at most (default 50; CI 40)")
    parser.add_argument("--no-restarts", action="store_true", help="leave the Redis restart rule out")
    args = parser.parse_args(argv)

    from tests.test_record_states import Server, run

    logging.disable(logging.WARNING)  # "no igsend worker is running", "republished ...": expected here
    with tempfile.TemporaryDirectory(prefix="igsend-fuzz-records-") as directory:
        server = Server(Path(directory))
        os.environ["IGSEND_REDIS_URL"] = server.url()
        from igsend.core.store import forget_connections

        forget_connections()
        print(f"record states: {args.examples} examples of up to {args.steps} steps, on a redis-server of its own "
              f"at 127.0.0.1:{server.port} (db 12)", flush=True)
        started = time.monotonic()
        try:
            run(server, examples=args.examples, steps=args.steps, restarts=not args.no_restarts, randomize=True)
        except BaseException as exc:  # the failing sequence of steps is in the exception's notes
            traceback.print_exception(exc, file=sys.stdout)
            print(f"FAILED after {time.monotonic() - started:.0f} s ({server.restarts} Redis restarts): "
                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
            return 1
        finally:
            server.stop()
        print(f"passed: {args.examples} examples in {time.monotonic() - started:.0f} s "
              f"({server.restarts} Redis restarts)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
