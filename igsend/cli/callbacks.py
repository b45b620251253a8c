"""``igsend callbacks``: the status-callback endpoints of IGSEND_CALLBACKS_FILE (list), one signed ``test`` event
sent now (test), and the failed events queued again (replay)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from igsend.cli.output import fail, print_json, print_table
from igsend.core import callbacks, routing
from igsend.core.store import get_redis


@click.group(name="callbacks")
def callbacks_group() -> None:
    """Status callbacks (IGSEND_CALLBACKS_FILE): each endpoint's state, a test event, replaying failed events."""


def _endpoints() -> dict[str, callbacks.Endpoint]:
    """The endpoints of the file; one line and exit 2 when the file is missing, unset or wrong."""
    try:
        endpoints = callbacks.load()
    except callbacks.CallbacksFileError as exc:
        fail(str(exc))
    if not endpoints:
        fail(callbacks.setting_hint())
    return endpoints


def _named(name: str) -> callbacks.Endpoint:
    endpoints = _endpoints()
    if name not in endpoints:
        fail(f"no endpoint {name!r} in {callbacks.SETTING} ({os.environ.get(callbacks.SETTING)}; endpoints: "
             f"{', '.join(endpoints)})", code=1)
    return endpoints[name]


@callbacks_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="as JSON, for programs")
def callbacks_list(as_json: bool) -> None:
    """Every endpoint: its URL (never the secret), events, accounts, state, counters, what waits and the last
    error."""
    endpoints = _endpoints()
    rows: list[dict[str, Any]] = []
    groups = routing.every_group()
    for group in groups:  # with IGSEND_GROUPS: each group's workers send its own events, from its own Redis
        with routing.in_group(group):
            client = get_redis()
            for endpoint in endpoints.values():
                state = callbacks.state(client, endpoint.name)
                rows.append({**({"group": group.name} if group else {}), "name": endpoint.name,
                             "url": endpoint.url, "events": list(endpoint.events),
                             "accounts": list(endpoint.accounts) or None, **state})
    if as_json:
        print_json(rows)
        return
    grouped = groups != [None]
    table = [(*(("GROUP",) if grouped else ()), "NAME", "URL", "EVENTS", "ACCOUNTS", "STATE", "SENT", "FAILED",
              "RETRIES", "QUEUED", "LAG", "LAST ERROR")]
    for row in rows:
        table.append((*((row["group"],) if grouped else ()), row["name"], row["url"], _events(row["events"]),
                      ",".join(row["accounts"] or ["all"]), row["state"], str(row["sent"]), str(row["failed_total"]),
                      str(row["retries"]), str(row["queued"] + row["sending"]), f"{row['lag_seconds']:.0f} s",
                      row["last_error"] or "-"))
    print_table(table)
    for row in rows:
        where = f" (group {row['group']})" if grouped else ""
        if row["state"] == "disabled":
            click.echo(f"{row['name']}{where}: disabled: {row['disabled_reason']}; "
                       f"`igsend callbacks replay {row['name']}` enables it again")
        if row["failed"]:
            click.echo(f"{row['name']}{where}: {row['failed']} failed event{'s' if row['failed'] != 1 else ''} "
                       f"kept; `igsend callbacks replay {row['name']}` queues them again")


def _events(events: list[str]) -> str:
    if tuple(events) == callbacks.MESSAGE_EVENTS:
        return "message.*"
    return ",".join(events)


@callbacks_group.command(name="test")
@click.argument("name")
def callbacks_test(name: str) -> None:
    """Send one signed ``test`` event to the endpoint NAME now, from this process (not through the queue); exit 1
    with the reason when the endpoint refuses it, does not answer, or its address is not allowed."""
    from workers.callback_http import session
    from workers.callbacks import payload, send_once

    endpoint = _named(name)
    event = callbacks.make_test_event()
    # a test event reads nothing from Redis: the client is never used
    body = json.dumps(payload(get_redis(), endpoint, event), ensure_ascii=False, separators=(",", ":"))
    http = session(allow_private=endpoint.allow_private, pool=1)
    answer, status = _send(http, endpoint, event["webhook_id"], body, send_once)
    if not answer.ok:
        fail(f"{name}: {answer.error}", code=1)
    click.echo(f"{name}: HTTP {status} (webhook-id {event['webhook_id']})")


def _send(http: Any, endpoint: callbacks.Endpoint, webhook_id: str, body: str, send_once: Any) -> tuple[Any, int]:
    """send_once, and the HTTP status of its answer (send_once keeps only whether it was a 2xx)."""
    statuses: list[int] = []

    def keep(response: Any, *_: Any, **__: Any) -> Any:
        statuses.append(response.status_code)
        return response

    http.hooks["response"].append(keep)
    answer = send_once(http, endpoint, webhook_id, body)
    return answer, statuses[-1] if statuses else 0


@callbacks_group.command(name="replay")
@click.argument("name", required=False)
def callbacks_replay(name: str | None) -> None:
    """Queue the failed events of the endpoint NAME (of every endpoint without NAME) again, oldest first, with
    fresh tries; a disabled endpoint is enabled again."""
    names = [_named(name).name] if name else list(_endpoints())
    total = 0
    for group in routing.every_group():
        with routing.in_group(group):
            client = get_redis()
            for endpoint in names:
                queued = callbacks.replay(client, endpoint)
                total += queued
                where = f" (group {group.name})" if group else ""
                click.echo(f"{endpoint}{where}: {queued} failed event{'s' if queued != 1 else ''} queued again")
    if len(names) > 1:
        click.echo(f"{total} in all")
