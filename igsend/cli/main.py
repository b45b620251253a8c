"""The ``igsend`` command line. Sending and status verbs live here; worker-side verbs import lazily so that
``igsend send`` stays as light as the Python API."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
import redis

from igsend.cli.accounts import accounts
from igsend.cli.dlq import dlq
from igsend.cli.groups import groups
from igsend.cli.jobs import cancel, status
from igsend.cli.local import demo, sandbox, up
from igsend.cli.output import fail
from igsend.cli.sending import send_bulk, send_group
from igsend.core.errors import ConfigurationError
from igsend.core.store import brief_connections, describe_redis_error

# The CLI says "nobody is listening" in its own words, once: not the producers' log line as well.
logging.getLogger("igsend.producers").addHandler(logging.NullHandler())

#: Commands a person waits on: their Redis calls fail within seconds instead of riding out an outage.
#: The long-running ones (worker, up, demo, metrics, ...) keep the patient policy.
_BRIEF = {"send", "send-bulk", "status", "dlq", "accounts", "groups"}


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            # One line, never a traceback, never the password in the URL.
            fail(describe_redis_error(exc), code=1)
        except ConfigurationError as exc:  # a bad IGSEND_* value: say which, in one line
            fail(str(exc), code=2)


FIRST_STEPS = """\b
First steps:
  igsend demo                                    everything on a private Redis: one message of every kind
  igsend up                                      the local stack until Ctrl-C (Redis, sandbox, worker, API)
  igsend send text 6543210987654321 "Hi" --wait  then, in another terminal: send one and see the outcome
"""


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]}, epilog=FIRST_STEPS)
@click.pass_context
def main(ctx: click.Context) -> None:
    """igsend: send Instagram Direct messages through a queue of Celery workers."""
    if ctx.invoked_subcommand in _BRIEF:
        _say_which_redis()
    if ctx.invoked_subcommand in _BRIEF:
        ctx.with_resource(brief_connections())  # undone when the command ends (CliRunner runs in-process)


def _say_which_redis() -> None:
    """The first line on stderr, when the Redis was not named by IGSEND_REDIS_URL: which one the command chose
    (a running ``igsend up`` of this directory, or the default) and why (igsend.core.redis_choice)."""
    from igsend.core.redis_choice import RedisChoice
    from igsend.core.settings import get_settings

    settings = get_settings()  # loads .env
    if not os.environ.get("IGSEND_REDIS_URL"):
        click.echo(f"redis: {RedisChoice(settings.redis_url, settings.redis_source).describe()}", err=True)


# --- worker side (imported lazily) ---------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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


@main.command()
@click.option("--port", default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", "processes", default=2, show_default=True, help="gunicorn worker processes")
def api(port: int, host: str, processes: int) -> None:
    """The HTTP producer API under gunicorn (keys from IGSEND_API_KEYS, required)."""
    if not os.environ.get("IGSEND_API_KEYS", "").strip():
        fail("IGSEND_API_KEYS must hold at least one key (comma-separated)")
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers",
                               str(processes), "--threads", "8", "--access-logfile", "-",
                               "producers.api:create_app()"])


@main.command()
@click.option("--port", default=9808, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
def metrics(port: int, host: str) -> None:
    """Prometheus exporter for queue depth, delayed/held jobs, DLQ size and account health."""
    from workers.metrics import serve_exporter

    serve_exporter(port, host)


main.add_command(send_group)
main.add_command(send_bulk)
main.add_command(status)
main.add_command(cancel)
main.add_command(dlq)
main.add_command(accounts)
main.add_command(groups)
main.add_command(sandbox)
main.add_command(demo)
main.add_command(up)
