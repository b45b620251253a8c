"""Redis as the API asks it: a client that gives up within a second, and the 503 of a call whose Redis is down."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import redis
from flask import request
from flask_smorest import abort
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from igsend.core import routing
from igsend.core.errors import UnknownAccount
from igsend.core.groups import Group, group_named_by
from igsend.core.settings import get_settings
from igsend.core.store import redis_from_url
from producers.api.errors import REDIS_DOWN


@lru_cache(maxsize=8)
def quick_redis(url: str) -> redis.Redis:
    """A client that gives up at once. The shared client (igsend.core.store) retries with backoff so that workers
    and scripts ride out a Redis restart, which would hold an HTTP caller for ~10 s and then answer 500; the API
    tells its caller 503 within a second instead, and the caller retries."""
    return redis_from_url(url, decode_responses=True, socket_connect_timeout=1, socket_timeout=1,
                          retry=Retry(NoBackoff(), 0))


def _redis_answers() -> bool:
    """Whether the process's Redis answers (without IGSEND_GROUPS)."""
    try:
        return bool(quick_redis(get_settings().redis_url).ping())
    except RedisError:
        return False


def _group_answers(group: Group) -> bool:
    try:
        with routing.in_group(group):  # a sentinel:// group's primary name
            return bool(quick_redis(group.redis_url).ping())
    except RedisError:
        return False


def _groups_used(posted: Callable[[], list[str]] | None) -> list[Group]:
    """The groups a /v1 call will work on, known without asking Redis: the account(s) of the messages sent
    (``posted`` reads them, for a POST of messages), the group a job id names, the account asked about; every group
    otherwise (a list of them all, or an id that names no group, looked for in each)."""
    known = routing.groups()
    job_id = (request.view_args or {}).get("job_id")
    if isinstance(job_id, str):
        name = group_named_by(job_id)
        return [known[name]] if name in known else list(known.values())
    posting = posted is not None
    accounts = posted() if posted else [request.args["account"]] if request.args.get("account") else []
    if not accounts:
        return [] if posting else list(known.values())  # a body naming no account is refused, Redis or not
    used: dict[str, Group] = {}
    for account in accounts:
        try:
            group = routing.group_of_account(account)
        except UnknownAccount:
            continue  # refused by the handler, 422 naming `account`
        if group is not None:
            used[group.name] = group
    return list(used.values())


def check_redis(posted: Callable[[], list[str]] | None = None) -> None:
    """Answer 503 at once when the Redis a /v1 call needs does not answer, rather than after the shared client's
    retries (~10 s). With IGSEND_GROUPS only the groups the call uses are asked: one group down fails its own
    accounts' calls, naming it, and the other groups keep working. ``posted``: for a POST of messages, what reads
    the accounts they name."""
    if not routing.groups():
        if not _redis_answers():
            abort(503, message=REDIS_DOWN)
        return
    down = [group for group in _groups_used(posted) if not _group_answers(group)]
    if down:
        names = ", ".join(group.name for group in down)
        accounts = ", ".join(account for group in down for account in group.accounts)
        abort(503, message=f"the Redis of group {names} (accounts {accounts}) does not answer: nothing was done; "
                           "try again shortly (the other groups are not affected)")
