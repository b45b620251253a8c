"""Files a producer staged (``producers.uploads``), uploaded once per account: Meta's attachment id is cached per
account and content hash, so the same bytes are sent by id ever after and never uploaded again.

The upload runs before the job is admitted (no lock, no in-flight mark, no rate slot): an upload repeated after a
worker was killed mid-way only leaves Meta a second copy of the file, never sends a message twice. Staged bytes are
deleted once their attachment id is cached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
import requests
from redis.client import NEVER_DECODE

from igsend.core.errors import IgsendError
from igsend.core.store import attachment_key, upload_key
from schemas import staged
from workers.accounts import Account
from workers.errors import Outcome, Verdict, classify_answer, classify_transport
from workers.graph import GraphClient

#: How long an attachment id is reused: Meta keeps reusable attachments 90 days; well inside that.
ATTACHMENT_TTL = 80 * 24 * 3600
#: Seconds a worker uploading some bytes keeps others from uploading the same bytes for the same account.
UPLOAD_LOCK_SECONDS = 60.0


class StagedFileGone(IgsendError):
    """The staged bytes expired (the message waited longer than IGSEND_MAX_AGE) or were never staged."""


@dataclass
class UploadFailed(Exception):
    """Meta did not take the file: ``verdict`` says whether to retry (an upload's lost answer may be retried)."""

    verdict: Verdict
    headers: dict[str, str]
    latency: float


def _uploading_key(account: str, digest: str) -> str:
    return attachment_key(account, digest) + ":uploading"


def _cached(client: redis.Redis, account: str, digest: str) -> str | None:
    value = client.get(attachment_key(account, digest))
    return str(value) if value else None


def upload_once(client: redis.Redis, graph: GraphClient, account: Account, media_type: str, digest: str, *,
                deadline: float) -> str:
    """The attachment id of the staged bytes ``digest`` for ``account``: from the cache, or uploaded now (a
    worker already uploading the same bytes is waited for, up to its lock)."""
    known = _cached(client, account.name, digest)
    if known:
        return known
    if not client.set(_uploading_key(account.name, digest), "1", nx=True, px=int(UPLOAD_LOCK_SECONDS * 1000)):
        give_up = time.monotonic() + UPLOAD_LOCK_SECONDS
        while time.monotonic() < give_up:
            time.sleep(0.1)
            known = _cached(client, account.name, digest)
            if known:
                return known
    try:
        # Again under the lock: a worker that finished between our first look and our lock has cached the id
        # and deleted the staged bytes (uploading them twice would be wasted, finding them gone a false death).
        known = _cached(client, account.name, digest)
        if known:
            return known
        fields = client.execute_command("HGETALL", upload_key(account.name, digest), **{NEVER_DECODE: []})
        staged_file = dict(zip(fields[::2], fields[1::2], strict=True)) if isinstance(fields, list) else fields
        if not staged_file or b"data" not in staged_file:
            raise StagedFileGone(f"the file to upload ({digest[:12]}…) is no longer in Redis: it waits at most "
                                 "IGSEND_MAX_AGE plus an hour; send it again")
        started = time.monotonic()
        try:
            answer = graph.upload(account, media_type, staged_file[b"data"],
                                  filename=staged_file[b"filename"].decode(),
                                  content_type=staged_file[b"content_type"].decode(), deadline=deadline)
        except requests.RequestException as exc:
            verdict = classify_transport(exc)
            if verdict.outcome is Outcome.UNKNOWN:  # an upload sends no message: safe to try again
                verdict = Verdict(Outcome.TRANSIENT, f"upload: {verdict.reason}")
            raise UploadFailed(verdict, {}, time.monotonic() - started) from None
        body: Any = answer.body
        if answer.status == 200 and isinstance(body, dict) and body.get("attachment_id"):
            attachment_id = str(body["attachment_id"])
            pipe = client.pipeline(transaction=True)
            pipe.set(attachment_key(account.name, digest), attachment_id, ex=ATTACHMENT_TTL)
            pipe.delete(upload_key(account.name, digest))
            pipe.execute()
            return attachment_id
        verdict = classify_answer(answer.status, body)
        if verdict.outcome in (Outcome.DELIVERED, Outcome.UNKNOWN):  # 200 without an id, or an unreadable answer
            verdict = Verdict(Outcome.TRANSIENT, f"upload answered without an attachment id (HTTP {answer.status})")
        raise UploadFailed(verdict, answer.headers, answer.elapsed)
    finally:
        client.delete(_uploading_key(account.name, digest))


def resolve(client: redis.Redis, graph: GraphClient, account: Account, message: dict[str, Any], *,
            deadline: float) -> dict[str, Any]:
    """``message`` with every staged file replaced by the attachment id Meta gave it."""
    if not staged(message):
        return message
    if "images" in message:
        items = [_by_id(client, graph, account, "image", item, deadline) for item in message["images"]]
        return {**message, "images": items}
    media_type = "image" if message["kind"] == "gif" else message["kind"]
    return _by_id(client, graph, account, media_type, message, deadline)


def _by_id(client: redis.Redis, graph: GraphClient, account: Account, media_type: str, item: dict[str, Any],
           deadline: float) -> dict[str, Any]:
    if "upload" not in item:
        return item
    rest = {key: value for key, value in item.items() if key != "upload"}
    return {**rest, "attachment_id": upload_once(client, graph, account, media_type, item["upload"],
                                                  deadline=deadline)}
