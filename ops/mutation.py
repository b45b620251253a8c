"""Mutation testing behind ``ops/mutation``: mutmut over the modules that decide a message's fate, each against its
own fast tests, and a table of the scores.

    ops/mutation                          # every module below, one after the other
    ops/mutation workers/errors.py        # one module (several may be named)
    ops/mutation --survivors workers/errors.py   # also list the mutants that survived (`mutmut show NAME` in
                                                 # mutants/<module>/ prints one)

mutmut reads its settings from the pyproject.toml of the folder it runs in, so each module gets its own folder,
mutants/<module>/: a copy of pyproject.toml with a ``[tool.mutmut]`` table naming that module and its test files,
and links to the packages and tests/. mutmut copies them into mutants/<module>/mutants/, mutates the one module
there and runs the tests that reach each mutated function. Every run starts from scratch (no result is reused).

A mutant is killed when a test fails on it (or it times out); any other end (survived, no test reaches it) counts
against the score. Equivalent mutants, which no test could tell from the original, are kept out with
``# pragma: no mutate`` on their line when every mutant of that line is one, else named in EQUIVALENT below (by
the line the mutant writes) and left out of the score; docs/development.md lists both with the reasons, and the
table counts them.
Not run by CI, nor by any test: a full run takes minutes per module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants"
#: what each module's folder links to: the packages (mutmut copies them, so the tests import the mutated module
#: and its unmutated neighbours from one place) and the tests
PACKAGES = ["igsend", "producers", "schemas", "sandbox", "workers"]

#: module -> the test files run against its mutants (fast ones: no worker process, no sandbox)
MODULES: dict[str, list[str]] = {
    "workers/errors.py": ["tests/test_errors.py", "tests/test_taxonomy.py"],
    # against the suite's own Redis (tests/conftest.py), one started by each mutant's test run
    "workers/admission.py": ["tests/test_admission.py"],
    "igsend/core/lanes.py": ["tests/test_lanes.py"],
    "igsend/core/chunks.py": ["tests/test_chunk_units.py"],
    "igsend/core/records.py": ["tests/test_record_units.py"],
    "workers/reconcile.py": ["tests/test_reconcile_units.py"],  # Meta's Conversations API through `responses`
    "workers/scheduler.py": ["tests/test_scheduler_units.py"],
}

#: Equivalent mutants on lines that also carry mutants a test kills (a ``# pragma: no mutate`` there would hide those
#: too): module -> (the mutated line as mutmut writes it, stripped; why no test can tell it from the original).
#: A survivor whose diff adds that line is counted as excluded, not as a survivor; docs/development.md lists them.
EQUIVALENT: dict[str, list[tuple[str, str]]] = {
    "workers/admission.py": [
        ('message.get("last_user_message_at") or "XXXX"]',
         "admit.lua reads the caller's last_user_message_at with tonumber(): '' and 'XXXX' are both no time"),
        ("args[5] = json.dumps(message, ensure_ascii=None)",
         "ensure_ascii=None is falsy, as False is: json.dumps writes the same text"),
        ("return self.script(keys=keys, args=args), 1",
         "only when replica_acks is 0, and no count of confirmations is below 0"),
        ("pipe = self.client.pipeline(transaction=None)",
         "transaction=None is falsy, as False is: the same pipeline without MULTI"),
    ],
    "igsend/core/chunks.py": [
        ("app.amqp.send_task_message(producer, CHUNK_TASK_NAME, message, queue=None, priority=NEW_PRIORITY, "
         "declare=[])",
         "Celery sends a message without a queue to task_default_queue, which is QUEUE: the same list"),
        ("app.amqp.send_task_message(producer, CHUNK_TASK_NAME, message, priority=NEW_PRIORITY, declare=[])",
         "Celery sends a message without a queue to task_default_queue, which is QUEUE: the same list"),
        ("app.amqp.send_task_message(producer, CHUNK_TASK_NAME, message, queue=QUEUE, priority=None, declare=[])",
         "kombu gives a message without a priority 0 (priority or default_priority), and NEW_PRIORITY is 0"),
        ("app.amqp.send_task_message(producer, CHUNK_TASK_NAME, message, queue=QUEUE, declare=[])",
         "kombu gives a message without a priority 0 (priority or default_priority), and NEW_PRIORITY is 0"),
    ],
    "igsend/core/records.py": [
        ("return json.dumps(value, ensure_ascii=None)",
         "ensure_ascii=None is falsy, as False is: json.dumps writes the same text"),
        ("pipe = self.client.pipeline(transaction=None)",
         "transaction=None is falsy, as False is: the same pipeline without MULTI (delivered, delivered_many)"),
        ("now = seconds + micros / 1000001",
         "under a microsecond earlier (micros < 10**6): finer than any test can read Redis's clock"),
        ("if self.dlq_archive and size >= self.dlq_max:",
         "at the cap, archive_oldest(..., 0, ...) sends ZPOPMIN key 0, which pops nothing: the same DLQ"),
        ("replies = pipe.execute(raise_on_error=None)",
         "raise_on_error=None is falsy, as False is: every reply comes back, errors included"),
    ],
    "workers/reconcile.py": [
        ("if age >= MAX_AGE:",
         "age is time.time() - started, read once: a float never exactly MAX_AGE (540.0)"),
        ("if asked_at > horizon:",
         "asked_at is time.time() when the look began: a float never exactly the horizon"),
        ("if horizon - time.time() >= MAX_INLINE_WAIT:",
         "time.time() is read there: the horizon is never exactly MAX_INLINE_WAIT (2.0 s) away"),
        ("index = int(self._claim(keys=sent.recent_keys(account.name, within=MAX_AGE - CLOCK_SKEW),",
         "recent_keys() works in whole hours: 538 s instead of 542 s leaves out the previous hour's hash only "
         "while the clock reads 538-542 s past an hour, which a test cannot choose"),
        ("self.client.pexpire(lock_key(job_id), int((max(1.0, seconds) + DEADLINE_MARGIN) * 1000))",
         "_hold() is given a slot's wait + GET_DEADLINE (5 s), or the wait to a horizon + MAX_INLINE_WAIT + "
         "GET_DEADLINE (7 s, less the last look's time): under 1 s only after a look of 6 s or more"),
    ],
    "workers/scheduler.py": [
        ("def __init__(self, client: redis.Redis | None = None, *, interval: float = 1.02, batch: int = 500,",
         "the wait between two idle ticks (a polling period): how soon a due job moves, not whether"),
        ("lease: float = 3.0, sweep_every: float = 6.0, lost_after: float | None = None,",
         "how often the budgets are recorded and the sweeper runs (a polling period): when, not what"),
        ("self._leading = None",
         "None is false, as False is: the first tick that takes the lease publishes the moving list all the same"),
        ("self._stop.wait(2.0)",
         "the pause after a failed tick (a polling period): how soon the loop tries again, not whether"),
        ("if self.budgets and time.monotonic() - self._last_budgets > self.sweep_every:",
         "time.monotonic() is read there: never exactly sweep_every after the last time it was read"),
        ("if time.monotonic() - self._last_sweep > self.sweep_every:",
         "time.monotonic() is read there: never exactly sweep_every after the last time it was read"),
        ("self._republish(cast(None, self.client.lrange(MOVING_KEY, 0, -1)))  # left by a previous leader",
         "typing.cast(None, x) is x at run time"),
        ('reply = self.claim_fair(keys=lanes.claim_keys(job_key(None), MOVING_KEY, PENDING_KEY),',
         "claim_fair.lua never reads its KEYS[8] (the job key prefix)"),
        ('reply = self.claim_fair(keys=lanes.claim_keys(job_key("XXXX"), MOVING_KEY, PENDING_KEY),',
         "claim_fair.lua never reads its KEYS[8] (the job key prefix)"),
        ("self._republish([job_id for chunk in handed for job_id in chunk.job_ids], priority=None)",
         "kombu gives a message without a priority 0 (priority or default_priority), and NEW_PRIORITY is 0"),
        ("pipe = self.client.pipeline(transaction=None)",
         "transaction=None is falsy, as False is: the same pipeline without MULTI"),
        ("pipe = self.client.pipeline(transaction=True)",
         "the same reads (HMGET, HGET) inside MULTI/EXEC: the same replies"),
        ("for job_id, (account, kind) in zip(ids, pipe.execute(), strict=None):",
         "a pipeline answers once per command queued: the two lists are always as long"),
        ("for job_id, (account, kind) in zip(ids, pipe.execute(), strict=False):",
         "a pipeline answers once per command queued: the two lists are always as long"),
        ("for job_id, (account, kind) in zip(ids, pipe.execute(), ):",
         "a pipeline answers once per command queued: the two lists are always as long"),
        ("for job_id, raw in zip(ids, messages, strict=None):",
         "a pipeline answers once per command queued: the two lists are always as long"),
        ("for job_id, raw in zip(ids, messages, strict=False):",
         "a pipeline answers once per command queued: the two lists are always as long"),
        ("for job_id, raw in zip(ids, messages, ):",
         "a pipeline answers once per command queued: the two lists are always as long"),
    ],
}

#: mutmut's exit codes (mutmut.stats.status_by_exit_code) that mean a test caught the mutant
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass
class Score:
    module: str
    mutants: int  # what mutmut made and ran (the pragma'd lines make none)
    killed: int
    pragma: int  # kept out by ``# pragma: no mutate``
    equivalent: list[str]  # made and not killed, but listed in EQUIVALENT (name: reason)
    seconds: float
    survivors: list[str]

    @property
    def excluded(self) -> int:
        return self.pragma + len(self.equivalent)

    @property
    def survived(self) -> int:
        return self.mutants - self.killed - len(self.equivalent)

    @property
    def percent(self) -> float:
        """Killed, of the mutants that are not equivalent."""
        judged = self.mutants - len(self.equivalent)
        return 100.0 * self.killed / judged if judged else 100.0


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def prepare(module: str, tests: list[str]) -> Path:
    """mutants/<module>/: links to the code and tests, and a pyproject.toml whose [tool.mutmut] names the module."""
    folder = WORK / slug(module)
    shutil.rmtree(folder / "mutants", ignore_errors=True)  # from scratch: no cached verdict survives a test change
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*PACKAGES, "tests"]:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    settings = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in settings:
        raise SystemExit("pyproject.toml has a [tool.mutmut] table: ops/mutation writes one per module")
    # JSON arrays of strings are TOML arrays
    settings += (f"\n[tool.mutmut]\nsource_paths = {json.dumps(PACKAGES)}\nonly_mutate = {json.dumps([module])}\n"
                 f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
                 'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n')  # no .pytest_cache written into the copy
    (folder / "pyproject.toml").write_text(settings, encoding="utf-8")
    return folder


def excluded_mutants(module: str, folder: Path) -> int:
    """How many mutants the module's ``# pragma: no mutate`` comments keep out (mutmut's own mutation operators,
    run on the module with and without those comments)."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.file_mutation import mutate_file_contents

    source = (ROOT / module).read_text(encoding="utf-8")
    bare = "\n".join(line.split("# pragma: no mutate")[0].rstrip() if "# pragma: no mutate" in line else line
                     for line in source.splitlines()) + "\n"
    before = Path.cwd()
    os.chdir(folder)  # mutmut's settings are read from the current folder's pyproject.toml
    try:
        reset_config()
        counts = [len(mutate_file_contents(module, text).mutant_names) for text in (bare, source)]
    finally:
        os.chdir(before)
    return counts[0] - counts[1]


def stop_leftovers(scratch: Path) -> None:
    """A mutant's test run that was killed (a timeout) leaves the Redis it started running: stop each process
    working in the run's scratch folder (redis-server changes into its --dir, and rewrites its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(scratch)) or str(scratch) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except ProcessLookupError:
                continue
            print(f"  stopped a leftover process {proc.name}: {cmdline.replace(chr(0), ' ')[:120]}", flush=True)


def run(module: str, tests: list[str], max_children: int) -> Score:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    folder = prepare(module, tests)
    log = folder / "mutmut.log"
    print(f"{module}: mutmut run against {' '.join(tests)} (log {log.relative_to(ROOT)})", flush=True)
    mutmut = Path(sys.executable).parent / "mutmut"
    # the tests' temporary folders (and so the --dir of every Redis they start) under the module's folder
    scratch = folder / "tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    started = time.monotonic()
    try:
        with log.open("w", encoding="utf-8") as out:
            done = subprocess.run([str(mutmut), "run", "--max-children", str(max_children)], cwd=folder,
                                  stdout=out, stderr=subprocess.STDOUT, check=False,
                                  env={**os.environ, "TMPDIR": str(scratch)})
    finally:
        stop_leftovers(scratch)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{module}: mutmut exited {done.returncode}; the end of {log}:\n"
                         + "\n".join(log.read_text(encoding="utf-8").splitlines()[-30:]))
    before = Path.cwd()
    os.chdir(folder)  # the results are under mutants/ of the module's folder
    try:
        data = SourceFileMutationData(path=module)
        data.load()
    finally:
        os.chdir(before)
    statuses = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
    if not statuses:
        raise SystemExit(f"{module}: mutmut recorded no mutant (see {log})")
    killed = sum(status in KILLED for status in statuses.values())
    equivalent, survivors = [], []
    for name, status in sorted(statuses.items()):
        if status in KILLED:
            continue
        reason = equivalent_because(module, folder, name)
        if reason:
            equivalent.append(f"{name}: {reason}")
        else:
            survivors.append(f"{name} ({status})")
    return Score(module, len(statuses), killed, excluded_mutants(module, folder), equivalent, seconds, survivors)


def equivalent_because(module: str, folder: Path, name: str) -> str | None:
    """Why the mutant ``name`` is equivalent, if its diff adds a line EQUIVALENT lists for the module."""
    mutmut = Path(sys.executable).parent / "mutmut"
    shown = subprocess.run([str(mutmut), "show", name], cwd=folder, capture_output=True, text=True, check=False)
    added = {line[1:].strip() for line in shown.stdout.splitlines() if line.startswith("+") and
             not line.startswith("+++")}
    return next((reason for line, reason in EQUIVALENT.get(module, []) if line in added), None)


def table(scores: list[Score], total_seconds: float) -> str:
    rows = [("module", "mutants", "killed", "survived", "excluded (equivalent)", "score", "time")]
    rows += [(s.module, str(s.mutants), str(s.killed), str(s.survived), str(s.excluded), f"{s.percent:.1f} %",
              f"{s.seconds:.0f} s") for s in scores]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"elapsed {total_seconds:.0f} s ({total_seconds / 60:.1f} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/mutation", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--survivors", action="store_true", help="list the mutants no test killed")
    args = parser.parse_args(argv)
    unknown = [module for module in args.modules if module not in MODULES]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)} (known: {', '.join(MODULES)})")
    started = time.monotonic()
    scores = [run(module, MODULES[module], args.max_children) for module in args.modules or MODULES]
    print()
    print(table(scores, time.monotonic() - started))
    if args.survivors:
        for score in scores:
            print(f"\n{score.module}: {len(score.survivors)} not killed")
            for name in score.survivors:
                print(f"  {name}")
            for line in score.equivalent:
                print(f"  equivalent, not counted: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
