"""What every command shares: printing JSON, tables and job outcomes, failing in one line, warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from igsend.core import presence
from igsend.core.store import get_redis, redis_warnings
from producers.jobs import Job


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False))


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one left as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]))


def warn_about_redis() -> None:
    """Redis settings that put queued messages at risk, on stderr (stdout stays machine-readable)."""
    for warning in redis_warnings(get_redis()):
        click.echo(f"warning: {warning}", err=True)


def nobody_listening(*, fresh: bool = False) -> bool:
    """Say on stderr, in one line, when no worker is alive to take what is queued; True then."""
    if fresh:
        presence.forget()
    warnings = presence.current().warnings()
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return bool(warnings)


def status_json(job: Job) -> dict[str, Any]:
    """The job's info with id, status, attempts, then result, error, reason, next_attempt_at first."""
    info = job.info()
    ordered: dict[str, Any] = {key: info[key] for key in ("id", "status", "attempts") if key in info}
    for key in ("result", "error", "reason", "next_attempt_at"):
        if key in info:
            ordered[key] = info[key]
    ordered.update({k: v for k, v in info.items() if k not in ordered})
    return ordered
