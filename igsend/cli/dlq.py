"""``igsend dlq``: list, show, replay, release and purge dead-letter entries (every group's)."""

from __future__ import annotations

import math
import sys

import click

from igsend.cli.output import fail, print_json, print_table
from igsend.core import routing
from igsend.core.errors import ReplayRefused


@click.group()
def dlq() -> None:
    """The dead-letter queue."""


@dlq.command(name="list")
@click.option("--account", default=None)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(account: str | None, as_json: bool) -> None:
    """Dead messages, oldest first."""
    from igsend.core import dlq as dead

    entries = []
    for group in routing.every_group():
        with routing.in_group(group):
            entries += [{**entry, "group": group.name} if group else entry
                        for entry in dead.list_entries(account=account)]
    if as_json:
        print_json(entries)
        return
    if not entries:
        click.echo("no dead letters" + (f" for account {account}" if account else ""))
        return
    rows = [("JOB ID", "ACCOUNT", "KIND", "RECIPIENT", "CODE", "REASON")]
    for entry in entries:
        error = entry.get("error") or {}
        code = f"{error.get('code')}/{error.get('subcode')}" if error.get("code") is not None else "-"
        rows.append((entry["id"], str(entry.get("account")), str(entry.get("kind")), str(entry.get("recipient")),
                     code, str(entry.get("reason"))))
    print_table(rows)
    click.echo(f"{len(entries)} dead letter{'s' if len(entries) != 1 else ''}"
               " (igsend dlq show ID: every attempt; igsend dlq replay ID: send again)")


@dlq.command(name="show")
@click.argument("job_id")
def dlq_show(job_id: str) -> None:
    """One entry as JSON, with every attempt."""
    from igsend.core import dlq as dead

    with routing.for_job(job_id):
        entry = dead.show(job_id)
    if entry is None:
        fail(f"no dead-letter entry {job_id}", code=1)
    print_json(entry)


@dlq.command(name="replay")
@click.argument("job_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every entry (of --account, if given)")
@click.option("--account", default=None)
def dlq_replay(job_id: str | None, replay_all: bool, account: str | None) -> None:
    """Send dead messages again under their job ids."""
    from igsend.core import dlq as dead

    if bool(job_id) == replay_all:
        fail("give a JOB_ID or --all")
    if job_id:
        try:
            with routing.for_job(job_id):
                found = dead.replay(job_id)
        except ReplayRefused as exc:
            fail(str(exc), code=1)
        if not found:
            fail(f"no dead-letter entry {job_id}", code=1)
        print_json({"replayed": [job_id]})
        return
    replayed: list[str] = []
    refused: dict[str, str] = {}
    for group in routing.every_group():
        with routing.in_group(group):
            # oldest first, as `dlq list` shows them; one job that is not dead does not stop the others
            outcome = dead.replay_many(list(reversed(list(dead.matching_ids(dead.Filter(account=account))))))
        replayed += outcome.replayed
        refused.update(outcome.refused)
    print_json({"replayed": replayed, "refused": refused})
    for message in refused.values():
        click.echo(f"error: {message}", err=True)
    if refused:
        sys.exit(1)


@dlq.command(name="release")
@click.argument("job_id")
def dlq_release(job_id: str) -> None:
    """Let the ordered conversation a dead message holds go on without it (IGSEND_ORDERED_DEAD=hold).

    `igsend dlq replay JOB_ID` resumes it the other way: the dead message is sent again first."""
    from igsend.core import dlq

    try:
        with routing.for_job(job_id):
            head = dlq.release(job_id)
    except LookupError as exc:
        fail(str(exc), code=1)
    click.echo(f"released: {'job ' + head + ' goes next' if head else 'no message waits in that conversation'}")


@dlq.command(name="purge")
@click.option("--older-than", default=None, help="only entries dead longer than this: 30s, 15m, 12h, 7d")
@click.option("--account", default=None)
@click.option("--yes", is_flag=True, help="purge every entry without asking (needed when not interactive)")
def dlq_purge(older_than: str | None, account: str | None, yes: bool) -> None:
    """Delete entries (all of them only after confirmation, or with --yes)."""
    from igsend.core import dlq as dead

    seconds = _duration(older_than) if older_than is not None else None
    if seconds is None and account is None and not yes:
        # Deleting every dead letter cannot be undone: a stray `dlq purge` in a script must not do it.
        if not sys.stdin.isatty():
            fail("purging every dead-letter entry needs --yes (or --older-than / --account)")
        size = 0
        for group in routing.every_group():
            with routing.in_group(group):
                size += dead.size()
        if not click.confirm(f"delete all {size} dead-letter entries?", err=True):
            fail("nothing purged", code=1)
    purged = 0
    for group in routing.every_group():
        with routing.in_group(group):
            purged += dead.purge(older_than=seconds, account=account)
    print_json({"purged": purged})


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except (ValueError, IndexError):
        seconds = math.nan
    # float() accepts "nan", "inf" and "-5": none of them is an age.
    if not math.isfinite(seconds) or seconds < 0:
        fail(f"--older-than: must be a duration like 30s, 15m, 12h or 7d (got {text!r})")
    return seconds
