"""The fuzz runs behind ``ops/fuzz``, one subcommand each (``api`` when none is given):

    ops/fuzz                      # the HTTP contract: Schemathesis, every check and phase, 100 examples per operation
    ops/fuzz api --examples 300   # more examples; --seed N to repeat a run; -- ARGS go to `st run` as they are
    ops/fuzz records              # the job record's state machine (ops/fuzz_records.py), 1000 examples

``api`` starts a private Redis (igsend.local.embedded_redis), writes a few dead letters into it the way a worker
does, starts ``igsend api`` with a key of every scope, and runs ``st run`` (igsend.local.fuzz) with the hooks and
settings that tell Schemathesis what the OpenAPI document cannot state (igsend/local/fuzz_hooks.py,
igsend/local/fuzz.toml). It prints Schemathesis's own summary and exits 1 on any failure, error, or operation
answered only 401/403 or 404. No worker runs (igsend.local.fuzz says why). ``records`` runs the Hypothesis state
machine of tests/test_record_states.py long (its options: ``ops/fuzz records --help``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from igsend.local.embedded_redis import free_port, start_redis  # noqa: E402
from igsend.local.fuzz import run_schemathesis, seed_in_subprocess  # noqa: E402
from igsend.local.processes import start_command  # noqa: E402

KEY = "fuzz-operate-key"


def fuzz_api(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="igsend-fuzz-") as tmp:
        work = Path(tmp)
        redis = start_redis(work / "redis")
        api = None
        try:
            print(f"Redis {redis.url} (private)", flush=True)
            seed_in_subprocess(redis.url, args.dead_letters)
            port = free_port()
            api = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                                env={"IGSEND_REDIS_URL": redis.url, "IGSEND_API_KEYS": f"{KEY}:send+read+operate"},
                                ready_url=f"http://127.0.0.1:{port}/openapi.json", log_path=work / "api.log")
            print(f"igsend api http://127.0.0.1:{port} (log {work / 'api.log'}, removed at the end)", flush=True)
            outcome = run_schemathesis(f"http://127.0.0.1:{port}", KEY, examples=args.examples, seed=args.seed,
                                       report=work / "report.json", extra=args.st_args, echo=True,
                                       timeout=args.timeout)
        finally:
            if api is not None:
                api.stop()
            redis.stop()
    if not outcome.report:
        print("fuzz: Schemathesis wrote no report", file=sys.stderr)
        return 1
    print(f"fuzz: {len(outcome.failures)} failures, {len(outcome.errors)} errors, "
          f"operations not exercised: {outcome.unexercised or 'none'}")
    return 0 if outcome.ok else 1


def fuzz_records(args: argparse.Namespace) -> int:
    from ops import fuzz_records as records

    return records.main(args.records_args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"api": fuzz_api, "records": fuzz_records}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ops/fuzz", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    api = commands.add_parser("api", help="Schemathesis against a real igsend api (the default)")
    api.add_argument("--examples", type=int, default=100, help="examples per operation (default 100)")
    api.add_argument("--seed", type=int, default=None, help="Schemathesis's seed, to repeat a run")
    api.add_argument("--dead-letters", type=int, default=30, help="dead letters to replay (default 30)")
    api.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    api.add_argument("st_args", nargs="*", help="after --: more `st run` arguments")
    commands.add_parser("records", help="the job record's state machine, long (ops/fuzz_records.py)")
    if argv and argv[0] == "records":  # its own options (ops/fuzz_records.py)
        return fuzz_records(argparse.Namespace(records_args=argv[1:]))
    if not argv or argv[0].startswith("-"):
        argv = ["api", *argv]
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
