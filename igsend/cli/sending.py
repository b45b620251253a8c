"""``igsend send KIND`` (one command per message kind, their arguments and shared options) and ``igsend send-bulk``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from igsend.cli.output import fail, nobody_listening, print_json, status_json
from igsend.core import presence, routing
from igsend.core.errors import IdempotencyConflict, OutsideWindow
from igsend.core.lanes import PRIORITIES
from igsend.core.store import get_redis
from producers import EnqueueError, InvalidMessage, JobError, media_item, send


def _deliver(document: dict[str, Any], account: str, idempotency_key: str | None, wait: bool,
             timeout: float) -> None:
    document["account"] = account
    if idempotency_key:
        document["idempotency_key"] = idempotency_key
    try:
        job = send(document)  # refuses an account no worker serves (UnknownAccount, an InvalidMessage)
    except OutsideWindow as exc:  # a valid message, refused for now: exit 1, like other refusals of a send
        fail(str(exc), code=1)
    except InvalidMessage as exc:
        fail(str(exc))
    except (EnqueueError, IdempotencyConflict) as exc:
        fail(str(exc), code=1)
    nobody = nobody_listening()
    if not wait:
        click.echo(job.id)
        return
    try:
        job.result(timeout=timeout)
    except TimeoutError as exc:
        print_json(job.info())
        idle = nobody or nobody_listening(fresh=True)
        fail(f"{exc}: {presence.no_worker_running()} (`igsend worker` or `igsend up`)" if idle else str(exc),
              code=1)
    except JobError:
        print_json(status_json(job))
        sys.exit(1)
    print_json(status_json(job))


def _send_options(func: Any) -> Any:
    func = click.option("--priority", type=click.Choice(PRIORITIES), default=None,
                        help="normal (the default: a reply) or bulk (a campaign: sent after the account's normal "
                             "messages)")(func)
    func = click.option("--ordered", is_flag=True, default=None,
                        help="POST it only after this account's earlier ordered messages to the recipient")(func)
    func = click.option("--at", "send_at", metavar="WHEN", default=None,
                        help="send at this time: ISO 8601 with a zone (2026-12-01T09:00:00+01:00) or Unix seconds; "
                             "scheduled until then")(func)
    func = click.option("--timeout", default=60.0, show_default=True, help="seconds to wait with --wait")(func)
    func = click.option("--wait", is_flag=True, help="wait for the outcome and print it as JSON")(func)
    func = click.option("--idempotency-key", default=None, help="same key + account = same job")(func)
    func = click.option("--account", default="default", show_default=True, help="sending account name")(func)
    return func


class _SendGroup(click.Group):
    """``igsend send --help`` lists every kind with its arguments, then the options they share."""

    usages: dict[str, str] = {}

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((f"{name} {self.usages.get(name, '')}".strip(), command.get_short_help_str(80)))
        with formatter.section("Kinds"):
            formatter.write_dl(rows)
        with formatter.section("Options of every kind"):
            formatter.write_dl([
                ("--account NAME", "the sending account (default: default); one a worker serves"),
                ("--wait", "wait for the outcome and print it as JSON (exit 1 if it is not delivered)"),
                ("--timeout SECONDS", "how long --wait waits (default: 60)"),
                ("--at WHEN", "send at this time (ISO 8601 with a zone, or Unix seconds); scheduled until then"),
                ("--ordered", "POST it only after the account's earlier ordered messages to the recipient"),
                ("--priority normal|bulk", "bulk: a campaign, sent after the account's normal messages"),
                ("--idempotency-key KEY", "the same key and account within 24 h give the same job, sent once"),
                ("--tag HUMAN_AGENT", "messages only: a person's reply up to 7 days after the user's message"),
                ("--reply-to MESSAGE_ID", "messages only: quote this message of the conversation"),
            ])


@click.group(name="send", cls=_SendGroup)
def send_group() -> None:
    """Queue one message; prints the job id (or, with --wait, the outcome as JSON).

    \b
    Example: igsend send text 6543210987654321 "Hi" --wait
    """


def _register_send(kind: str, arguments: list[str], help_text: str, build: Any,
                   optional: list[tuple[str, str]] | None = None, *, several: str | None = None,
                   message: bool = True) -> None:
    """``igsend send KIND ARGUMENTS... [OPTIONAL]... [SEVERAL]...``; ``message``: it sends a message (not a sender
    action), so it takes --tag and --reply-to."""
    usage = [a.upper() for a in arguments] + [f"[{n.upper()}]" for n, _ in optional or []]
    _SendGroup.usages[kind] = " ".join(usage + ([f"{several.upper()}..."] if several else []))

    def command(account: str, idempotency_key: str | None, wait: bool, timeout: float, send_at: str | None,
                ordered: bool | None, priority: str | None, tag: str | None = None, reply_to: str | None = None,
                **values: Any) -> None:
        try:
            group = routing.group_of_account(account)  # with IGSEND_GROUPS: the account's group, or UnknownAccount
        except InvalidMessage as exc:
            fail(str(exc))
        with routing.in_group(group):
            get_redis().ping()  # an unreachable Redis is reported as such, not as a failed enqueue
        when: str | float | None = float(send_at) if send_at and send_at.replace(".", "", 1).isdigit() else send_at
        extra = {name: value for name, value in (("tag", tag), ("reply_to", reply_to), ("send_at", when),
                                                 ("ordered", ordered or None), ("priority", priority))
                 if value is not None}
        try:
            document = {"kind": kind, **build({**values, "account": account}), **extra}
        except InvalidMessage as exc:  # a local file the kind does not take, or the account cannot upload
            fail(str(exc))
        with routing.in_group(group):  # its workers are the ones that matter for "nobody is listening"
            _deliver(document, account, idempotency_key, wait, timeout)

    command.__doc__ = help_text
    command = _send_options(command)
    if message:
        command = click.option("--reply-to", metavar="MESSAGE_ID", default=None,
                               help="quote this message of the conversation")(command)
        command = click.option("--tag", metavar="HUMAN_AGENT", default=None,
                               help="a person's reply within 7 days of the user's message (Human Agent "
                                    "permission)")(command)
    if several:
        command = click.argument(several, nargs=-1, required=True)(command)
    for name, default in reversed(optional or []):
        command = click.argument(name, required=False, default=default)(command)
    for name in reversed(arguments):
        command = click.argument(name)(command)
    send_group.command(name=kind)(command)


def _media_source(kind: str, value: str, account: str) -> dict[str, str]:
    """SOURCE of a media kind: the numeric id of an attachment uploaded beforehand, a local file that exists
    (uploaded once by the worker), else a URL (the message's rules say what is wrong with one that is not)."""
    if value.isascii() and value.isdigit():
        return {"attachment_id": value}
    try:
        local = "://" not in value and Path(value).is_file()
    except (OSError, ValueError):  # a name too long, or a NUL: not a file of this machine
        local = False
    return media_item(kind, value, account=account) if local else {"url": value}


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    """``TITLE=VALUE`` arguments (the title is what comes before the first '=')."""
    pairs = []
    for value in values:
        title, equals, rest = value.partition("=")
        if not equals:
            raise click.BadParameter(f"{value!r}: write each {what} as TITLE=VALUE")
        pairs.append((title, rest))
    return pairs


def _buttons(values: tuple[str, ...]) -> list[dict[str, str]]:
    """``TITLE=https://...`` is a web_url button, any other ``TITLE=PAYLOAD`` a postback button."""
    return [{"type": "web_url", "title": title, "url": value} if value.startswith(("http://", "https://"))
            else {"type": "postback", "title": title, "payload": value} for title, value in _pairs(values, "button")]


def _json_argument(value: str, name: str) -> Any:
    """A JSON argument, inline or ``@FILE``."""
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{name} must be JSON (or @FILE holding JSON): {exc}") from None


_register_send("text", ["recipient", "text"], "Text (UTF-8, at most 1000 bytes).",
               lambda v: {"recipient": v["recipient"], "text": v["text"]})
_register_send("link", ["recipient", "url"], "A link (a valid http(s) URL).",
               lambda v: {"recipient": v["recipient"], "url": v["url"]})
for _media, _what in (("image", "An image (png, jpeg, gif)"), ("gif", "A GIF"),
                      ("video", "A video (mp4, ogg, avi, mov, webm)"), ("audio", "An audio file (aac, m4a, wav, mp4)"),
                      ("file", "A PDF (25 MB)")):
    _register_send(_media, ["recipient", "source"], f"{_what}: a public http(s) URL, an uploaded attachment id, "
                   "or a local file (Facebook Login).",
                   lambda v, kind=_media: {"recipient": v["recipient"],
                                           **_media_source(kind, v["source"], v["account"])})
_register_send("images", ["recipient"], "1-10 images in one message, each a URL, an attachment id or a local file.",
               lambda v: {"recipient": v["recipient"],
                          "images": [_media_source("image", i, v["account"]) for i in v["sources"]]},
               several="sources")
_register_send("post", ["recipient", "post_id"], "A published post the account owns (MEDIA_SHARE).",
               lambda v: {"recipient": v["recipient"], "post_id": v["post_id"]})
_register_send("sticker", ["recipient"], "The heart sticker.", lambda v: {"recipient": v["recipient"]})
_register_send("quick_replies", ["recipient", "text"], "Text with 1-13 options, each TITLE=PAYLOAD (titles at "
               "most 20 characters).",
               lambda v: {"recipient": v["recipient"], "text": v["text"], "quick_replies": [
                   {"content_type": "text", "title": title, "payload": payload}
                   for title, payload in _pairs(v["options"], "option")]}, several="options")
_register_send("button_template", ["recipient", "text"], "Text (at most 640 characters) with 1-3 buttons: "
               "TITLE=https://... opens a page, TITLE=PAYLOAD posts back.",
               lambda v: {"recipient": v["recipient"], "text": v["text"], "buttons": _buttons(v["buttons"])},
               several="buttons")
_register_send("generic_template", ["recipient", "elements"], "1-10 cards: ELEMENTS is Meta's elements array "
               "as JSON, or @FILE.",
               lambda v: {"recipient": v["recipient"], "elements": _json_argument(v["elements"], "ELEMENTS")})
_register_send("product_template", ["recipient"], "1-10 catalog products (Facebook-Login accounts only).",
               lambda v: {"recipient": v["recipient"], "product_ids": list(v["product_ids"])},
               several="product_ids")
_register_send("react", ["recipient", "message_id"], "React to a message (REACTION defaults to love).",
               lambda v: {"recipient": v["recipient"], "message_id": v["message_id"], "reaction": v["reaction"]},
               optional=[("reaction", "love")], message=False)
_register_send("unreact", ["recipient", "message_id"], "Remove a reaction.",
               lambda v: {"recipient": v["recipient"], "message_id": v["message_id"]}, message=False)
for _action, _what in (("typing_on", "Show the typing indicator."), ("typing_off", "Hide the typing indicator."),
                       ("mark_seen", "Mark the conversation's last message as seen.")):
    _register_send(_action, ["recipient"], _what, lambda v: {"recipient": v["recipient"]}, message=False)
_register_send("private_reply", ["comment_id", "text"], "The one private reply to a comment (within 7 days of "
               "it); the same comment again returns the first job.",
               lambda v: {"comment_id": v["comment_id"], "text": v["text"]}, message=False)


@click.command(name="send-bulk")
@click.argument("file", type=click.File("rb"))
@click.option("--no-wait", is_flag=True, help="enqueue and exit without waiting for outcomes")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for all outcomes")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--no-idempotency", is_flag=True,
              help="do not derive idempotency keys from the lines: running the file again sends it again")
@click.option("--priority", type=click.Choice(PRIORITIES), default="bulk", show_default=True,
              help="for lines that name none: bulk waits behind each account's normal messages (replies)")
def send_bulk(file: Any, no_wait: bool, timeout: float, as_json: bool, no_idempotency: bool, priority: str) -> None:
    """Queue every message of a JSON-lines FILE ('-' for stdin); invalid lines are reported, valid ones sent.

    \b
    Safe to interrupt and to run again: each line gets an idempotency key derived from its content and
    from how many identical lines came before it (bulk-<sha256>), so running the same file again queues
    only the lines that were not queued yet, within IGSEND_IDEMPOTENCY_WINDOW (24 h by default). A line
    with its own "idempotency_key" keeps it. --no-idempotency turns this off. Ctrl-C stops between
    batches and prints how many lines were queued and how to resume.
    """
    from producers.bulk import run_bulk

    for group in routing.every_group():  # Redis unreachable before anything is read: one line (as `send`)
        with routing.in_group(group):
            get_redis().ping()
    if priority == "bulk":
        click.echo("priority: bulk (send-bulk's default: each account's replies go first; --priority normal to "
                   "change it)", err=True)
    sys.exit(run_bulk(file, wait=not no_wait, timeout=timeout, as_json=as_json,
                      idempotency=not no_idempotency, priority=priority))
