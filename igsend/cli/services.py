"""``igsend worker``, ``flower``, ``api`` and ``metrics``: the long-running servers, their code imported only to run."""

from __future__ import annotations

import os
import sys

import click

from igsend.cli.output import fail


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", "-c", type=int, default=None,
              help="POSTs in flight per process [IGSEND_CONCURRENCY or 64]")
@click.option("--processes", "-p", type=int, default=None,
              help="worker processes [IGSEND_PROCESSES or one per CPU core]")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--name", default=None, hidden=True)
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, processes: int | None, loglevel: str,
           name: str | None) -> None:
    """Celery workers with igsend's settings (threads pool); arguments after -- go to Celery."""
    from workers.run import run_worker

    run_worker(concurrency=concurrency, processes=processes, loglevel=loglevel, extra=list(ctx.args), name=name)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", default=5555, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface; put TLS in front)")
@click.pass_context
def flower(ctx: click.Context, port: int, host: str) -> None:
    """Flower on igsend's app, with basic auth from IGSEND_FLOWER_AUTH=user:password (required)."""
    user, colon, password = os.environ.get("IGSEND_FLOWER_AUTH", "").partition(":")
    if not (colon and user.strip() and password.strip()):
        # Flower would accept an empty user or password: that is a login anyone can guess.
        fail("IGSEND_FLOWER_AUTH must be set to user:password, both non-empty "
              "(Flower never runs without authentication)")
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"  # via the environment: not in `ps` output
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
                               f"--address={host}", "--purge_offline_workers=60", *ctx.args])


@click.command()
@click.option("--port", default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", "processes", default=2, show_default=True, help="gunicorn worker processes")
@click.option("--threads", default=32, show_default=True, type=click.IntRange(min=2),
              help="requests each process serves at once; up to 8 fewer may wait for a job's end (?wait=)")
def api(port: int, host: str, processes: int, threads: int) -> None:
    """The HTTP producer API under gunicorn (keys from IGSEND_API_KEYS, required)."""
    if not os.environ.get("IGSEND_API_KEYS", "").strip():
        fail("IGSEND_API_KEYS must hold at least one key (comma-separated)")
    waiting = max(1, threads - 8)  # a waiting request holds its thread: the others keep at least one (8 from 9 up)
    app = f"producers.api:create_app(max_waiting={waiting})"
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers",
                               str(processes), "--threads", str(threads), "--access-logfile", "-", app])


@click.command()
@click.option("--port", default=9808, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
def metrics(port: int, host: str) -> None:
    """Prometheus exporter for queue depth, delayed/held jobs, DLQ size and account health."""
    from workers.metrics import serve_exporter

    serve_exporter(port, host)
