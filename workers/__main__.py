"""``python -m workers``: one worker process (what the supervisor in ``workers.run`` starts per core)."""

from __future__ import annotations

import argparse

from workers.run import run_worker

parser = argparse.ArgumentParser(prog="python -m workers")
parser.add_argument("--concurrency", type=int, default=None)
parser.add_argument("--loglevel", default="INFO")
parser.add_argument("--name", default=None)
parser.add_argument("extra", nargs="*", help="arguments for Celery, after --")
args = parser.parse_args()
run_worker(concurrency=args.concurrency, processes=1, loglevel=args.loglevel, extra=args.extra, name=args.name)
