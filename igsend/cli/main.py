"""The ``igsend`` click group: which Redis, brief connections, failures in one line; every command registered."""

from __future__ import annotations

import logging
import os
from typing import Any

import click
import redis

from igsend.cli.accounts import accounts
from igsend.cli.callbacks import callbacks_group
from igsend.cli.dlq import dlq
from igsend.cli.groups import groups
from igsend.cli.jobs import cancel, status
from igsend.cli.local import demo, sandbox, up
from igsend.cli.output import fail
from igsend.cli.sending import send_bulk, send_group
from igsend.cli.services import api, flower, metrics, worker
from igsend.core import tracing
from igsend.core.errors import ConfigurationError
from igsend.core.store import brief_connections, describe_redis_error

# The CLI says "nobody is listening" in its own words, once: not the producers' log line as well.
logging.getLogger("igsend.producers").addHandler(logging.NullHandler())

#: Commands a person waits on: their Redis calls fail within seconds instead of riding out an outage.
#: The long-running ones (worker, up, demo, metrics, ...) keep the patient policy.
_BRIEF = {"send", "send-bulk", "status", "dlq", "accounts", "groups", "callbacks"}


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
        ctx.with_resource(brief_connections())  # undone when the command ends (CliRunner runs in-process)
    if ctx.invoked_subcommand in ("send", "send-bulk") and tracing.start("igsend-cli"):
        ctx.call_on_close(tracing.flush)  # the CLI exits right after: export its spans first


def _say_which_redis() -> None:
    """The first line on stderr, when the Redis was not named by IGSEND_REDIS_URL: which one the command chose
    (a running ``igsend up`` of this directory, or the default) and why (igsend.core.redis_choice)."""
    from igsend.core.redis_choice import RedisChoice
    from igsend.core.settings import get_settings

    settings = get_settings()  # loads .env
    if not os.environ.get("IGSEND_REDIS_URL"):
        click.echo(f"redis: {RedisChoice(settings.redis_url, settings.redis_source).describe()}", err=True)


# Each command lives in the module of its family (sending, jobs, dlq, accounts, groups, callbacks, local, services); the
# heavy ones (worker, flower, api, metrics, demo, up, sandbox) import their code only when they run, so that
# `igsend send` stays as light as the Python API. `igsend --help` lists them alphabetically.
main.add_command(send_group)
main.add_command(status)
main.add_command(cancel)
main.add_command(send_bulk)
main.add_command(worker)
main.add_command(sandbox)
main.add_command(demo)
main.add_command(up)
main.add_command(dlq)
main.add_command(flower)
main.add_command(api)
main.add_command(metrics)
main.add_command(accounts)
main.add_command(groups)
main.add_command(callbacks_group)
