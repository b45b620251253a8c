"""``igsend accounts``: every account's health (list), and marking one healthy again (heal)."""

from __future__ import annotations

from typing import Any

import click

from igsend.cli.output import fail, print_json, print_table, warn_about_redis
from igsend.core import presence, routing
from producers import InvalidMessage


@click.group()
def accounts() -> None:
    """Account health: see which accounts are paused or broken, and mark them healthy."""


@accounts.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="as JSON, for programs")
def accounts_list(as_json: bool) -> None:
    """Every account the workers serve: name, id, login kind, budgets, token expiry, state, messages held."""
    from igsend.core.account_state import describe, describe_token, overview

    rows: list[dict[str, Any]] = []
    groups = routing.every_group()
    for group in groups:  # with IGSEND_GROUPS: every group's accounts, each from its own Redis
        with routing.in_group(group):
            rows += [{"group": group.name, **row} if group else row for row in overview()]
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("no accounts yet: workers list the accounts they serve when they start (igsend worker)")
    else:
        grouped = groups != [None]
        table = [(*(("GROUP",) if grouped else ()), "ACCOUNT", "ID", "LOGIN", "TEXT/S", "MEDIA/S", "WORKERS", "HELD",
                  "TOKEN EXPIRES", "STATE")]
        for row in rows:
            budgets = row.get("budgets") or {}
            table.append((*((row["group"],) if grouped else ()), row["account"], row.get("id") or "?",
                          row.get("login") or "?",
                          f"{budgets['text']:g}" if "text" in budgets else "?",
                          f"{budgets['media']:g}" if "media" in budgets else "?",
                          str(row["workers"]), str(row["held"]), describe_token(row["token"]), describe(row)))
        print_table(table)
    if not as_json and rows and not any(row["workers"] for row in rows):
        click.echo(f"warning: {presence.no_worker_warning()}", err=True)
    for group in groups:
        with routing.in_group(group):
            warn_about_redis()


@accounts.command(name="heal")
@click.argument("name")
def accounts_heal(name: str) -> None:
    """Mark an account healthy again (after fixing its token) and release its held messages."""
    from igsend.core.account_state import mark_healthy

    try:
        group = routing.group_of_account(name)
    except InvalidMessage as exc:
        fail(str(exc))
    with routing.in_group(group):
        print_json({"account": name, "released": mark_healthy(name)})
