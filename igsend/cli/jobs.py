"""``igsend status`` and ``igsend cancel``: one job, by its id."""

from __future__ import annotations

import click

from igsend.cli.output import fail, nobody_listening, print_json, status_json, warn_about_redis
from igsend.core import routing, waiting
from igsend.core.errors import CancelRefused
from producers import JobNotFound, get_job
from producers.jobs import NOT_FOUND_GRACE, Job, JobStatus


@click.command()
@click.argument("job_id")
@click.option("--wait", "wait", type=click.FloatRange(min=0, max=30, min_open=True), default=None, metavar="N",
              help="wait up to N seconds (0 < N <= 30) for the job to end: printed as soon as it is final, else "
                   "with its status after N seconds (woken by the job's end, no polling)")
def status(job_id: str, wait: float | None) -> None:
    """The job as JSON: id, status, attempts, result or error, and its attempt log."""
    with routing.for_job(job_id):  # with IGSEND_GROUPS: the group its id names
        try:
            job = get_job(job_id)
            if wait is not None and waiting.wait_for(job.id, job.status, wait,
                                                     not_found_grace=NOT_FOUND_GRACE) is JobStatus.NOT_FOUND:
                raise JobNotFound(f"no job {job_id} (wrong id, or expired)")
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
