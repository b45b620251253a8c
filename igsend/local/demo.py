"""``igsend demo``: the whole send path on embedded defaults, one message of every kind, as a table."""

from __future__ import annotations

import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEMO_ACCOUNT_ID = "17841400000000000"
DEMO_RECIPIENT = "6543210987654321"
#: A second, Page-linked account (Facebook Login) for what Meta offers only there: product templates.
DEMO_PAGE_ACCOUNT = "shop"
DEMO_PAGE_ID = "104000000000001"


def _messages(first_message_id: str) -> list[dict[str, Any]]:
    recipient = DEMO_RECIPIENT
    link = "https://shop.example.com/boots"
    return [
        {"kind": "link", "recipient": recipient, "url": "https://example.com/spring-sale"},
        {"kind": "image", "recipient": recipient, "url": "https://cdn.example.com/photos/shoe.png"},
        {"kind": "gif", "recipient": recipient, "url": "https://cdn.example.com/anim/wave.gif"},
        {"kind": "video", "recipient": recipient, "url": "https://cdn.example.com/clips/unboxing.mp4"},
        {"kind": "audio", "recipient": recipient, "url": "https://cdn.example.com/voice/thanks.m4a"},
        {"kind": "post", "recipient": recipient, "post_id": "17895695668004550"},
        {"kind": "sticker", "recipient": recipient},
        {"kind": "react", "recipient": recipient, "message_id": first_message_id, "reaction": "love"},
        {"kind": "unreact", "recipient": recipient, "message_id": first_message_id},
        {"kind": "images", "recipient": recipient, "images": [
            {"url": "https://cdn.example.com/photos/boot-left.png"}, {"url": "https://cdn.example.com/photos/boot.jpg"}]},
        {"kind": "file", "recipient": recipient, "url": "https://cdn.example.com/docs/invoice-1042.pdf"},
        {"kind": "quick_replies", "recipient": recipient, "text": "Did the boots fit?", "quick_replies": [
            {"content_type": "text", "title": "Yes, perfectly", "payload": "FIT_YES"},
            {"content_type": "text", "title": "Too small", "payload": "FIT_SMALL"}]},
        {"kind": "generic_template", "recipient": recipient, "elements": [
            {"title": "Trail boots", "subtitle": "Waterproof, 2 colours", "image_url": "https://cdn.example.com/b.png",
             "default_action": {"type": "web_url", "url": link},
             "buttons": [{"type": "postback", "title": "Buy", "payload": "BUY_BOOTS"}]}]},
        {"kind": "button_template", "recipient": recipient, "text": "What would you like to do?", "buttons": [
            {"type": "web_url", "title": "Track my order", "url": "https://shop.example.com/orders/1042"},
            {"type": "postback", "title": "Talk to a person", "payload": "HUMAN"}]},
        {"kind": "text", "recipient": recipient, "text": "Sorry for the wait: a colleague here, I'm on it.",
         "tag": "HUMAN_AGENT", "reply_to": first_message_id},
        {"kind": "product_template", "recipient": recipient, "product_ids": ["8012345678901"],
         "account": DEMO_PAGE_ACCOUNT},
        {"kind": "typing_on", "recipient": recipient},
        {"kind": "typing_off", "recipient": recipient},
        {"kind": "mark_seen", "recipient": recipient},
        {"kind": "private_reply", "comment_id": f"1790{secrets.randbelow(10**13):013d}",
         "text": "Thanks for your comment! The details are in your DMs."},
    ]


def _tiny_png() -> bytes:
    """A 1x1 PNG, made here so the demo ships no binary file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xe1\x30\x6c"))
            + chunk(b"IEND", b""))


def run_demo(*, keep_redis: bool = False, timeout: float = 60.0, redis_url: str | None = None) -> int:
    """``redis_url`` (``--redis-url``) or IGSEND_REDIS_URL names the Redis to use; without either the demo
    runs on a private Redis of its own, so it never touches one the user has."""
    from igsend.core.settings import get_settings
    from igsend.local.embedded_redis import choose_redis
    from igsend.local.processes import start_sandbox, start_worker

    console = Console(soft_wrap=True)  # lines are not wrapped (a long path stays on its line)
    if not console.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        console = Console(width=200, soft_wrap=True)
    settings = get_settings()
    data_dir = Path(settings.data_dir).resolve()
    redis, which = choose_redis(redis_url, data_dir / "demo-redis", "igsend demo")
    token = "IGDEMO" + secrets.token_urlsafe(24)  # fresh per run; only the worker and the sandbox see it
    page_token = "EAADEMO" + secrets.token_urlsafe(24)  # the Page-linked account's (Facebook Login)
    accounts_file = data_dir / "demo-accounts.toml"
    accounts_file.parent.mkdir(parents=True, exist_ok=True)
    accounts_file.write_text(f'[accounts.{DEMO_PAGE_ACCOUNT}]\nid = "{DEMO_PAGE_ID}"\nlogin = "facebook"\n'
                             'token_env = "DEMO_SHOP_TOKEN"\n', encoding="utf-8")
    services = []
    try:
        console.print(f"[bold]redis[/]    {which}", highlight=False)
        sandbox = start_sandbox(tokens=[token, page_token], latency_ms=30, log_path=data_dir / "demo-sandbox.log")
        services.append(sandbox)
        console.print(f"[bold]sandbox[/]  {sandbox.url}")
        worker_env = {"IGSEND_REDIS_URL": redis.url, "IGSEND_ACCESS_TOKEN": token,
                      "IGSEND_ACCOUNT_ID": DEMO_ACCOUNT_ID, "IGSEND_GRAPH_URL": sandbox.url,
                      "IGSEND_LOGIN": "instagram", "IGSEND_ACCOUNTS_FILE": str(accounts_file),
                      "DEMO_SHOP_TOKEN": page_token}
        worker = start_worker(env=worker_env, log_path=data_dir / "demo-worker.log", concurrency=16)
        services.append(worker)
        console.print(f"[bold]worker[/]   pid {worker.process.pid}, log {worker.log_path}")
        return _send_all(console, redis.url, timeout)
    finally:
        for service in reversed(services):
            service.stop()
        if not keep_redis:
            redis.stop()


def _send_all(console: Console, redis_url: str, timeout: float) -> int:
    os.environ["IGSEND_REDIS_URL"] = redis_url
    from igsend.core.settings import get_settings
    from igsend.core.store import get_redis
    from producers import JobError, media_item, send, send_text

    get_settings.cache_clear()
    assert get_redis().ping()
    first = send_text(DEMO_RECIPIENT, "Hi from igsend 👋 — your order has shipped.")
    rows = [("text", first)]
    try:  # react/unreact need the id of a message in the thread: use the one just sent
        first_message_id = first.result(timeout=timeout)["message_id"]
    except (JobError, TimeoutError) as exc:
        console.print(f"[red]the first message did not go through: {exc}[/]")
        first_message_id = "unknown"
    for document in _messages(first_message_id):
        notes = [document[key] for key in ("tag", "account") if key in document]
        label = document["kind"] + (f" ({', '.join(notes)})" if notes else "")
        rows.append((label, send(document)))
    # a local file: staged in Redis, uploaded once by the worker (Facebook Login), then sent by attachment id
    picture = {"kind": "image", "recipient": DEMO_RECIPIENT, "account": DEMO_PAGE_ACCOUNT,
               **media_item("image", _tiny_png(), account=DEMO_PAGE_ACCOUNT)}
    rows.append((f"image (local file, {DEMO_PAGE_ACCOUNT})", send(picture)))

    table = Table(title="igsend demo: one message of every kind, through Redis, a worker and the sandbox")
    for column in ("kind", "job id", "status", "recipient_id", "message_id", "attempts", "ms"):
        table.add_column(column, no_wrap=column != "message_id")
    delivered = 0
    for kind, job in rows:
        try:
            result = job.result(timeout=timeout)
        except (JobError, TimeoutError):
            result = {}
        info = job.info()
        finished = info.get("delivered_at") or info.get("updated_at") or info["created_at"]
        elapsed_ms = (finished - info["created_at"]) * 1000
        ok = info["status"] == "delivered"
        delivered += ok
        table.add_row(kind, job.id, f"[green]{info['status']}[/]" if ok else f"[red]{info['status']}[/]",
                      result.get("recipient_id", ""), result.get("message_id", "—"), str(info.get("attempts", 0)),
                      f"{elapsed_ms:.0f}")
    console.print(table)
    console.print(f"{delivered}/{len(rows)} delivered")
    return 0 if delivered == len(rows) else 1
