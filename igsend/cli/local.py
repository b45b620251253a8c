"""``igsend sandbox``, ``demo`` and ``up``: the Graph API emulator and the whole stack on this machine."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.pass_context
def sandbox(ctx: click.Context) -> None:
    """The local Graph API emulator (flags: --port --token --latency-ms --error-rate --rate-limit ...)."""
    from sandbox import main as sandbox_main

    tokens = [account.token for account in _configured_accounts()]
    extra = [arg for token in tokens for arg in ("--token", token)]
    sandbox_main(list(ctx.args) + extra)


def _configured_accounts() -> list[Any]:
    from workers.accounts import load_accounts

    return list(load_accounts().values())


_REDIS_URL_HELP = "use this Redis (default: IGSEND_REDIS_URL if set, else a private one of igsend's own)"


@click.command()
@click.option("--keep", is_flag=True, help="leave Redis running (if demo started it)")
@click.option("--redis-url", default=None, help=_REDIS_URL_HELP)
def demo(keep: bool, redis_url: str | None) -> None:
    """A private Redis, the sandbox and a worker; send every kind; print the outcomes."""
    from igsend.local.demo import run_demo

    sys.exit(run_demo(keep_redis=keep, redis_url=redis_url))


@click.command()
@click.option("--api-port", default=8000, show_default=True)
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--metrics-port", default=9808, show_default=True)
@click.option("--sandbox-port", default=8899, show_default=True, help="used when no account token is configured")
@click.option("--redis-url", default=None, help=_REDIS_URL_HELP)
def up(api_port: int, flower_port: int, metrics_port: int, sandbox_port: int, redis_url: str | None) -> None:
    """The whole stack as local processes (a private Redis, worker, Flower, API, metrics) until Ctrl-C."""
    from igsend.local.up import run_up

    sys.exit(run_up(api_port=api_port, flower_port=flower_port, metrics_port=metrics_port,
                    sandbox_port=sandbox_port, redis_url=redis_url))
