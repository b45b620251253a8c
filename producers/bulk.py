"""``igsend send-bulk``: read JSON lines, queue the valid ones in batches, follow them with a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producers import send_many
from producers.jobs import Job, JobStatus
from producers.store import get_redis, job_key

BATCH = 1000


def _read(file: TextIO) -> tuple[list[tuple[int, Any]], dict[int, str]]:
    documents, errors = [], {}
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            documents.append((number, json.loads(line)))
        except ValueError as exc:
            errors[number] = f"not valid JSON ({exc.msg} at column {exc.colno})"
    return documents, errors


def _statuses(jobs: list[Job]) -> Counter:
    counts: Counter = Counter()
    redis = get_redis()
    for start in range(0, len(jobs), 1000):
        pipe = redis.pipeline(transaction=False)
        for job in jobs[start:start + 1000]:
            pipe.hget(job_key(job.id), "status")
        counts.update(status or JobStatus.NOT_FOUND.value for status in pipe.execute())
    return counts


def run_bulk(file: TextIO, *, wait: bool = True, timeout: float = 600.0, as_json: bool = False) -> int:
    console = Console(stderr=True)
    documents, errors = _read(file)
    unparsable = len(errors)
    jobs: list[Job] = []
    for start in range(0, len(documents), BATCH):
        chunk = documents[start:start + BATCH]
        batch = send_many([document for _, document in chunk])
        for index, error in batch.errors.items():
            errors[chunk[index][0]] = str(error)
        jobs.extend(batch.queued)
    for number in sorted(errors):
        console.print(f"line {number}: {errors[number]}", style="red", markup=False, highlight=False)
    counts: Counter = Counter()
    if wait and jobs:
        counts = _follow(jobs, timeout, console)
    summary = {"lines": len(documents) + unparsable, "queued": len(jobs), "invalid": len(errors),
               "statuses": dict(counts), "job_ids": [job.id for job in jobs]}
    if as_json:
        print(json.dumps(summary))
    else:
        final = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "not followed"
        print(f"queued {len(jobs)}, invalid {len(errors)}; outcomes: {final}")
    if errors or any(s != JobStatus.DELIVERED.value for s in counts.elements()):
        return 1
    return 0


def _follow(jobs: list[Job], timeout: float, console: Console) -> Counter:
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
