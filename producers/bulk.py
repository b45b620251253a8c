"""``igsend send-bulk``: read JSON lines, queue the valid ones in batches, follow them with a progress bar.

Safe to interrupt and to run again. Every line gets an idempotency key derived from its content, so a second
run of the same file finds the jobs of the lines already queued instead of queuing them again. Ctrl-C is
taken between batches, never inside one: a batch interrupted between its job records and its publish would
leave records that claim an idempotency key but were never queued, and the next run would skip them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from igsend.core.store import describe_redis_error
from producers import EnqueueError, send_many
from producers.jobs import Job, JobStatus, statuses

BATCH = 1000
#: Exit status after Ctrl-C, as a shell reports a process killed by SIGINT.
INTERRUPTED = 130


def line_key(document: dict[str, Any], occurrence: int) -> str:
    """The idempotency key of a line: its canonical JSON and how many identical lines came before it.

    Two identical lines are two messages (the occurrence tells them apart); the file's name, its other
    lines and their order do not matter, so a file edited above a line, or copied elsewhere, keeps the
    keys of the lines that did not change."""
    return _key(_canonical(document), occurrence)


def _canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _key(canonical: str, occurrence: int) -> str:
    return "bulk-" + hashlib.sha256(f"{occurrence}\n{canonical}".encode()).hexdigest()[:32]


def _lines(file: BinaryIO) -> Iterator[tuple[int, Any | None, str | None]]:
    """(line number, document or None, error or None) for every non-blank line."""
    for number, raw in enumerate(file, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM, as some editors write
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), None
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
        except ValueError as exc:  # well-formed, but e.g. an integer longer than Python converts (4300 digits)
            yield number, None, f"not valid JSON ({exc})"


@dataclass
class _Progress:
    jobs: list[Job] = field(default_factory=list)  # every valid line's job, to follow
    queued: int = 0  # jobs this run put on the queue
    already: int = 0  # lines whose job an earlier run (same idempotency key) had queued
    errors: dict[int, str] = field(default_factory=dict)
    lines: int = 0
    last_line: int = 0  # every line up to here is queued or reported


class _DeferSigint:
    """Turn SIGINT into a flag checked between batches."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _DeferSigint:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, _signum: int, _frame: object) -> None:
        self.requested = True

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _queue(file: BinaryIO, state: _Progress, idempotency: bool, stop: _DeferSigint, priority: str) -> str | None:
    """Queue the file batch by batch; returns why it stopped early (None when it read the whole file)."""
    seen: Counter[str] = Counter()
    chunk: list[tuple[int, Any]] = []

    def flush() -> None:
        batch = send_many([document for _, document in chunk], priority=priority)
        for index, error in batch.errors.items():
            state.errors[chunk[index][0]] = str(error)
        state.jobs.extend(job for job in batch.jobs if job is not None)
        state.queued += len(batch.new)
        state.already += len(batch.duplicates)
        state.last_line = chunk[-1][0]
        chunk.clear()

    last_read = 0
    for number, document, error in _lines(file):
        if stop.requested:
            return "interrupted"
        state.lines += 1
        last_read = number
        if error is not None:
            state.errors[number] = error
        else:
            if idempotency and isinstance(document, dict) and not document.get("idempotency_key"):
                canonical = _canonical(document)
                seen[canonical] += 1
                document = {**document, "idempotency_key": _key(canonical, seen[canonical])}
            chunk.append((number, document))
        if len(chunk) >= BATCH:
            flush()
    if chunk:
        flush()
    state.last_line = last_read
    return None


def run_bulk(file: BinaryIO, *, wait: bool = True, timeout: float = 600.0, as_json: bool = False,
             idempotency: bool = True, priority: str = "bulk") -> int:
    """Queue a JSON-lines file (``igsend send-bulk``); lines that name no ``priority`` get ``priority``."""
    console = Console(stderr=True)
    state = _Progress()
    stopped: str | None
    with _DeferSigint() as stop:
        try:
            stopped = _queue(file, state, idempotency, stop, priority)
        except (RedisError, EnqueueError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, RedisError) else exc
            stopped = describe_redis_error(cause) if isinstance(cause, RedisError) else str(exc)
    for number in sorted(state.errors):
        console.print(f"line {number}: {state.errors[number]}", style="red", markup=False, highlight=False)
    if stopped is not None:
        _report_stop(state, stopped, idempotency, getattr(file, "name", "FILE"), as_json)
        return INTERRUPTED if stopped == "interrupted" else 1
    counts: Counter[str] = Counter()
    interrupted = False
    if wait and state.jobs:
        try:
            counts = _follow(state.jobs, timeout, console)
        except KeyboardInterrupt:  # everything is queued: stopping to watch loses nothing
            interrupted = True
    summary = {"lines": state.lines, "queued": state.queued, "already_queued": state.already,
               "invalid": len(state.errors), "statuses": dict(counts), "job_ids": [job.id for job in state.jobs]}
    if as_json:
        print(json.dumps(summary))
    else:
        final = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "not followed"
        already = f", already queued {state.already}" if state.already else ""
        print(f"queued {state.queued}{already}, invalid {len(state.errors)}; outcomes: {final}")
    if interrupted:
        print("interrupted while following: every line is queued and will be sent; "
              "watch with igsend status JOB_ID", file=sys.stderr)
        return INTERRUPTED
    if state.errors or any(s != JobStatus.DELIVERED.value for s in counts.elements()):
        return 1
    return 0


def _report_stop(state: _Progress, why: str, idempotency: bool, name: str, as_json: bool) -> None:
    if idempotency:
        resume = "run the same command again to queue the rest: lines already queued are skipped"
    else:
        resume = (f"to queue the rest without sending lines 1-{state.last_line} twice: "
                  f"tail -n +{state.last_line + 1} {name} | igsend send-bulk -")
    what = "interrupted" if why == "interrupted" else f"stopped: {why}"
    if as_json:
        print(json.dumps({"stopped": why, "lines": state.lines, "queued": state.queued,
                          "already_queued": state.already,
                          "invalid": len(state.errors), "last_line": state.last_line, "resume": resume,
                          "job_ids": [job.id for job in state.jobs]}))
    else:
        already = f", already queued {state.already}" if state.already else ""
        print(f"{what}: queued {state.queued} message(s){already}, invalid {len(state.errors)}, "
              f"through line {state.last_line}")
    print(f"{what}; {resume}", file=sys.stderr)


def _statuses(jobs: list[Job]) -> Counter[str]:
    return Counter(status.value for status in statuses([job.id for job in jobs]))  # each group's, with groups


def _follow(jobs: list[Job], timeout: float, console: Console) -> Counter[str]:
    deadline = time.monotonic() + timeout
    columns = (TextColumn("[bold]sending"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("send", total=len(jobs), detail="")
        while True:
            counts = _statuses(jobs)
            done = sum(counts[s.value] for s in JobStatus if s.final)
            detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            progress.update(task, completed=done, detail=detail)
            if done == len(jobs) or time.monotonic() > deadline:
                return counts
            time.sleep(0.25)
