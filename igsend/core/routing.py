"""Which Redis a message or a job belongs to when there are several (``IGSEND_GROUPS``, igsend.core.groups).

Producers call :func:`for_account` around the work on one account's messages and :func:`for_job` around the work
on one job; inside, every Redis client and the Celery app follow that group's Redis (through
``igsend.core.settings.using_redis``). Without ``IGSEND_GROUPS`` both change nothing: one group, IGSEND_REDIS_URL.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from igsend.core import records
from igsend.core.celery_app import in_broker
from igsend.core.errors import ConfigurationError, UnknownAccount
from igsend.core.groups import Group, group_named_by, load_groups
from igsend.core.settings import get_settings, using_redis
from igsend.core.store import get_redis

#: How often a long-running producer (the HTTP API) looks whether the groups file changed: moving an account
#: (docs/groups.md) takes effect this long after the file is saved, without a restart.
RECHECK_SECONDS = 1.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, tuple[int, int], dict[str, Group]]] = {}


def groups() -> dict[str, Group]:
    """The groups of IGSEND_GROUPS in the file's order; empty without it. Read again when the file changes; a file
    that became invalid raises ConfigurationError (nothing is routed by a guess)."""
    path = get_settings().groups_file
    if path is None:
        return {}
    now = time.monotonic()
    with _lock:
        cached = _cache.get(path)
        if cached is not None and now - cached[0] < RECHECK_SECONDS:
            return cached[2]
    try:
        stat = os.stat(path)
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ConfigurationError(f"IGSEND_GROUPS: cannot read {path}: {exc.strerror}") from None
    found = cached[2] if cached is not None and cached[1] == version else load_groups(path)
    with _lock:
        _cache[path] = (now, version, found)
    return found


def forget() -> None:
    """Read the groups file again on next use."""
    with _lock:
        _cache.clear()


def group_of_account(account: str) -> Group | None:
    """The account's group; None without groups. Raises UnknownAccount for an account no group holds: it is
    refused before anything is queued."""
    known = groups()
    if not known:
        return None
    for group in known.values():
        if account in group.accounts:
            return group
    names = sorted(a for group in known.values() for a in group.accounts)
    raise UnknownAccount(account, names, rule=f"the account {account!r} is in no group of IGSEND_GROUPS "
                                               f"({get_settings().groups_file}; accounts: {', '.join(names)}); "
                                               "add it to a group's accounts")


def group_of_job(job_id: str) -> Group | None:
    """The group holding the job: the one its id names (no Redis call). An id that names no group (made before
    groups were configured, or chosen by a raw Celery client) is looked for in every group, record first, then
    the broker; None without groups, or when no group has it (callers then report it not found)."""
    known = groups()
    if not known:
        return None
    named = group_named_by(job_id)
    if named is not None and named in known:
        return known[named]
    for group in known.values():
        with in_group(group):
            if records.exists(get_redis(), job_id):
                return group
    for group in known.values():
        with in_group(group):
            if in_broker(get_redis(), job_id):
                return group
    return None


@contextmanager
def in_group(group: Group | None) -> Iterator[None]:
    """Work on ``group``'s Redis within the block (None: the process's own)."""
    with using_redis(group.redis_url if group else None, group.redis_master if group else None):
        yield


@contextmanager
def for_account(account: str) -> Iterator[Group | None]:
    """Work on the account's group within the block; UnknownAccount when no group holds it."""
    group = group_of_account(account)
    with in_group(group):
        yield group


@contextmanager
def for_job(job_id: str) -> Iterator[Group | None]:
    """Work on the group holding the job within the block."""
    group = group_of_job(job_id)
    with in_group(group):
        yield group


def every_group() -> list[Group | None]:
    """What a view of everything walks: each group, or ``[None]`` (the process's own Redis) without groups."""
    known = groups()
    return list(known.values()) if known else [None]
