"""Meta's message id -> the job that sent it, kept as long as the jobs' records: one small hash per account and hour.

Who reads it: a read receipt or a reaction (``messaging_seen``, ``message_reactions``) names only Meta's message id
and finds its job here; a reconciliation (workers/reconcile.py) never takes a message another job sent for its own.

Why hashes rather than a key per message: a key costs about 180 bytes of Redis's own bookkeeping (its name, its
expiry entry) for each delivered message; a field in a shared hash about 80 (docs/redis.md; ``ops/bench memory``).
A field is a 9-byte digest of the id (12 base64 characters), not the id (66-140 characters): a lookup compares the
job's record, which keeps the id itself, so two ids with one digest never link the wrong job. A value is the job's
id, 22 characters for a UUID (igsend's ids; Celery's too) instead of 36.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import cast

import redis

from igsend.core.store import PREFIX, done_key

#: What every Instagram message id begins with (``ig_message_item`` and more, in base64): a delivered record keeps
#: the rest, after a ``~``.
MESSAGE_ID_PREFIX = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlE"
#: Seconds of deliveries one hash holds.
BUCKET = 3600
#: Stands for "nothing to index" in the finish script (an igsend key name, so ACL key patterns cover it).
NO_INDEX_KEY = f"{PREFIX}sent:"
#: The shortest time an entry is kept, whatever IGSEND_DELIVERED_TTL says: a reconciliation needs the entries of
#: the last ten minutes (workers/reconcile.py ``MAX_AGE``).
MIN_KEEP = 600


def sent_key(account: str, at: float) -> str:
    """The hash that holds the deliveries of ``account`` in the hour of ``at`` (Unix seconds)."""
    return f"{PREFIX}sent:{account}:{int(at // BUCKET)}"


def digest(message_id: str) -> str:
    """The field that stands for ``message_id`` in a hash."""
    raw = hashlib.blake2b(message_id.encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(raw).decode()


def compact_job_id(job_id: str) -> str:
    """How a hash keeps ``job_id``: a UUID's 16 bytes in base64 (22 characters), any other id after a ``!``."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        return "!" + job_id
    if str(parsed) != job_id:
        return "!" + job_id
    return base64.urlsafe_b64encode(parsed.bytes).decode().rstrip("=")


def job_id_of(value: str) -> str:
    """The job id a hash's value stands for (the inverse of :func:`compact_job_id`)."""
    if value.startswith("!"):
        return value[1:]
    return str(uuid.UUID(bytes=base64.urlsafe_b64decode(value + "==")))


def keep_seconds(delivered_ttl: int) -> int:
    """The TTL a hash gets at each write: its last entry outlives the delivered record it points to."""
    return max(delivered_ttl, MIN_KEEP) + BUCKET


def recent_keys(account: str, *, within: float, now: float | None = None) -> list[str]:
    """The hashes that may hold a delivery of the last ``within`` seconds, the current hour's first; the next
    hour's too (another worker's clock may be a little ahead)."""
    now = time.time() if now is None else now
    hours = [int(now // BUCKET), int(now // BUCKET) + 1]
    hours += range(int(now // BUCKET) - 1, int((now - within) // BUCKET) - 1, -1)
    return [f"{PREFIX}sent:{account}:{hour}" for hour in hours]


def job_of(client: redis.Redis, account: str, message_id: str, *, delivered_ttl: int) -> str | None:
    """The job that sent ``message_id`` from ``account`` while its record lasts, else None."""
    keys = recent_keys(account, within=keep_seconds(delivered_ttl))
    field = digest(message_id)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, field)
    for value in cast(list[str | bytes | None], pipe.execute()):
        if value is None:
            continue
        job_id = job_id_of(value.decode() if isinstance(value, bytes) else value)
        record = client.get(done_key(job_id))
        if record is not None and expand_message_id(json.loads(record).get("mi")) == message_id:
            return job_id
    return None


def expand_message_id(stored: str | None) -> str | None:
    """Meta's message id as a delivered record keeps it (lua/finish.lua drops :data:`MESSAGE_ID_PREFIX`)."""
    if stored is not None and stored.startswith("~"):
        return MESSAGE_ID_PREFIX + stored[1:]
    return stored
