"""Moving an account from one Redis group to another (docs/groups.md): what the old group still holds of it, and
its idempotency keys carried over, so a producer retrying with a key across the switch gets its first job back
instead of a second send."""

from __future__ import annotations

from collections import Counter

import redis

from igsend.core.records import JobStatus
from igsend.core.store import PREFIX

#: Statuses of a job a group still has to work on.
UNFINISHED = frozenset(status.value for status in JobStatus if not status.final and status is not JobStatus.NOT_FOUND)
_SCAN = 1000


def backlog(client: redis.Redis, account: str) -> dict[str, int]:
    """The account's unfinished jobs in this Redis, by status (``queued``, ``scheduled``, ``retrying``, ...): empty
    once the group has worked off everything of it. SCANs the job records (a delivered job is compacted out of
    them), so it never blocks Redis; meant for an operator's check, not for every call."""
    counts: Counter[str] = Counter()
    keys: list[str] = []

    def read() -> None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "account", "status")
        for owner, status in pipe.execute():
            if owner == account and status in UNFINISHED:
                counts[status] += 1
        keys.clear()

    for key in client.scan_iter(match=f"{PREFIX}job:*", count=_SCAN, _type="hash"):
        keys.append(key)
        if len(keys) >= _SCAN:
            read()
    if keys:
        read()
    return dict(counts)


def copy_idempotency_keys(source: redis.Redis, target: redis.Redis, account: str) -> int:
    """Copy the account's idempotency keys (``igsend:idem:ACCOUNT:*``, each naming its job in the old group) to the
    new group with the time they have left; a key the new group has already is kept. Returns how many were
    copied. Job ids name their group, so a send answered with an old job is followed in the old group."""
    copied = 0
    pattern = f"{PREFIX}idem:{account}:*"
    batch: list[str] = []

    def copy() -> int:
        pipe = source.pipeline(transaction=False)
        for key in batch:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute()
        write = target.pipeline(transaction=False)
        for index, key in enumerate(batch):
            value, ttl = replies[2 * index], replies[2 * index + 1]
            if value is not None and ttl != -2:
                write.set(key, value, px=ttl if ttl > 0 else None, nx=True)
        done = sum(1 for result in write.execute() if result)
        batch.clear()
        return done

    for key in source.scan_iter(match=pattern, count=_SCAN):
        batch.append(key)
        if len(batch) >= _SCAN:
            copied += copy()
    if batch:
        copied += copy()
    return copied
