"""``igsend status`` and ``igsend cancel``: one job, by its id."""

from __future__ import annotations

import click

from igsend.cli.output import fail, nobody_listening, print_json, status_json, warn_about_redis
from igsend.core import routing
from igsend.core.errors import CancelRefused
from producers import JobNotFound, get_job
from producers.jobs import Job


@click.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """The job as JSON: id, status, attempts, result or error, and its attempt log."""
    with routing.for_job(job_id):  # with IGSEND_GROUPS: the group its id names
        try:
            job = get_job(job_id)
        except JobNotFound as exc:
            fail(str(exc), code=1)
        info = status_json(job)
        print_json(info)
        if info.get("status") in ("queued", "scheduled", "retrying"):
            nobody_listening()
        warn_about_redis()


@click.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Take back a queued, scheduled or retrying message: it is never sent. Prints its status JSON.

    A message that is sending or finished cannot be cancelled (exit 1, with the reason)."""
    job = Job(job_id)  # its methods work on the group its id names (IGSEND_GROUPS)
    try:
        job.cancel()
    except JobNotFound as exc:
        fail(str(exc), code=1)
    except CancelRefused as exc:
        fail(str(exc), code=1)
    print_json(status_json(job))
