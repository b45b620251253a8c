"""``igsend groups``: the Redis groups of IGSEND_GROUPS (list), and an account's move between them."""

from __future__ import annotations

import os
from typing import Any

import click

from igsend.cli.output import fail, print_json
from igsend.core import presence, routing
from igsend.core.store import get_redis


@click.group()
def groups() -> None:
    """Redis groups (IGSEND_GROUPS): list them, and move an account between them (docs: Redis groups)."""


def _named_group(name: str) -> Any:
    known = routing.groups()
    if not known:
        fail("IGSEND_GROUPS is not set: there is one group, IGSEND_REDIS_URL")
    if name not in known:
        fail(f"no group {name!r} in {os.environ.get('IGSEND_GROUPS')} (groups: {', '.join(known)})")
    return known[name]


@groups.command(name="list")
def groups_list() -> None:
    """Every group as JSON: its Redis (no password), its accounts, its live workers and the accounts they serve."""
    rows = []
    for group in routing.every_group():
        with routing.in_group(group):
            now = presence.read(get_redis())
            rows.append({**(group.public() if group else {"group": None}),
                         "workers": now.alive, "served": sorted(now.served())})
    print_json(rows)


@groups.command(name="backlog")
@click.argument("account")
def groups_backlog(account: str) -> None:
    """The ACCOUNT's unfinished jobs in every group, by status, as JSON (``{}``: none). After moving it, the old
    group is drained when its entry is empty."""
    from igsend.core.moves import backlog

    found = {}
    for group in routing.every_group():
        with routing.in_group(group):
            found[group.name if group else "-"] = backlog(get_redis(), account)
    print_json(found)


@groups.command(name="copy-keys")
@click.argument("account")
@click.option("--from", "source", required=True, help="the group the account leaves")
@click.option("--to", "target", required=True, help="the group the account joins")
def groups_copy_keys(account: str, source: str, target: str) -> None:
    """Copy ACCOUNT's idempotency keys from one group to another (with their time left), so a send retried with
    a key across the move answers with the job already queued instead of sending again."""
    from igsend.core.moves import copy_idempotency_keys

    old, new = _named_group(source), _named_group(target)
    with routing.in_group(old):
        source_client = get_redis()
    with routing.in_group(new):
        target_client = get_redis()
    print_json({"account": account, "from": source, "to": target,
                 "copied": copy_idempotency_keys(source_client, target_client, account)})
