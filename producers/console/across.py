"""How the console reads every Redis group (``IGSEND_GROUPS``) at once: each group's part, or why the group is down,
and long lists (dead letters, scheduled) paged as one chain of groups.

Without groups there is one part, the process's own Redis, and a cursor is the plain rank it always was. With
groups a page goes on from where the last one stopped, group after group in the file's order, so a page costs what a
page of one group costs however many groups there are; the cursor names its group (``beta:150``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import redis

from igsend.core import routing
from igsend.core.groups import NAME, Group
from igsend.core.store import describe_redis_error, get_redis

T = TypeVar("T")
Item = TypeVar("Item")


class GroupDown(Exception):
    """A group's Redis does not answer: the console says which and answers 503, without the patient retries."""


@dataclass
class Part(Generic[T]):
    """One group's share of a page: what was read, or why nothing could be (``down``)."""

    group: str | None
    value: T | None = None
    down: str | None = None


def grouped() -> bool:
    """Whether IGSEND_GROUPS names groups (the pages then show a Group column)."""
    return bool(routing.groups())


def each_group(read: Callable[[redis.Redis], T], *, only: str | None = None) -> list[Part[T]]:
    """``read`` on each group's Redis (or the one named ``only``), with a client that fails within about a second:
    a group whose Redis is down is reported as such and the others are still shown."""
    parts: list[Part[T]] = []
    for group in routing.every_group():
        if only and (group is None or group.name != only):
            continue
        parts.append(_one(group, read))
    return parts


def _one(group: Group | None, read: Callable[[redis.Redis], T]) -> Part[T]:
    name = group.name if group else None
    with routing.in_group(group):
        try:
            return Part(name, value=read(get_redis(patient=False)))
        except redis.RedisError as exc:
            return Part(name, down=describe_redis_error(exc))


@contextmanager
def reachable(group: Group | None) -> Iterator[Group | None]:
    """Work on ``group``'s Redis within the block, once it answered a PING (else :class:`GroupDown`)."""
    with routing.in_group(group):
        try:
            get_redis(patient=False).ping()
        except redis.RedisError as exc:
            where = f"group {group.name}: " if group else ""
            raise GroupDown(where + describe_redis_error(exc)) from None
        yield group


@contextmanager
def for_job(job_id: str) -> Iterator[Group | None]:
    """:func:`igsend.core.routing.for_job`, answering :class:`GroupDown` at once when the job's group is down."""
    with reachable(routing.group_of_job(job_id)) as group:
        yield group


def job_groups(job_ids: list[str]) -> dict[Group | None, list[str]]:
    """Ids by the group holding them (the one each id names: no Redis call for those), in the order given."""
    by_group: dict[Group | None, list[str]] = {}
    for job_id in job_ids:
        by_group.setdefault(routing.group_of_job(job_id), []).append(job_id)
    return by_group


# --- a list paged across groups ----------------------------------------------------------------------------------

@dataclass
class Chain(Generic[Item]):
    #: (group name or None, item), in page order
    items: list[tuple[str | None, Item]] = field(default_factory=list)
    #: the cursor of the next page, None at the end
    next_cursor: str | None = None
    #: groups skipped because their Redis is down: name -> why
    down: dict[str, str] = field(default_factory=dict)
    #: how much of the scan budget the page spent (entries a filter read)
    scanned: int = 0


#: What a chain reads of one group: (client, start rank, how many at most, scan budget left) -> (items, next rank
#: in this group or None at its end, how much of the scan budget it spent).
Reader = Callable[[redis.Redis, int, int, int], tuple[list[Item], int | None, int]]


def parse_cursor(text: str) -> tuple[str | None, int]:
    """``GROUP:RANK`` (or a plain ``RANK`` without groups) as (group, rank); anything else is the start."""
    name, _, rank = text.rpartition(":")
    try:
        number = max(0, int(rank))
    except ValueError:
        return None, 0
    return (name if NAME.fullmatch(name) else None), number


def cursor(group: str | None, rank: int) -> str:
    return f"{group}:{rank}" if group else str(rank)


def chain(read: Reader[Item], *, at: str, size: int, budget: int, only: str | None = None) -> Chain[Item]:
    """Up to ``size`` items from cursor ``at`` on: the rest of its group, then the next groups from their start,
    until the page is full or ``budget`` (entries a filter may read) is spent."""
    start_group, rank = parse_cursor(at)
    groups = [g for g in routing.every_group() if not only or (g is not None and g.name == only)]
    names = [g.name if g else None for g in groups]
    first = names.index(start_group) if start_group in names else 0
    if start_group not in names:
        rank = rank if start_group is None else 0
    page: Chain[Item] = Chain()
    for index in range(first, len(groups)):
        group = groups[index]
        name = names[index]
        start = rank if index == first else 0
        with routing.in_group(group):
            try:
                items, next_rank, spent = read(get_redis(patient=False), start, size - len(page.items), budget)
            except redis.RedisError as exc:
                page.down[name or "redis"] = describe_redis_error(exc)
                continue
        page.items += [(name, item) for item in items]
        budget -= spent
        page.scanned += spent
        if next_rank is not None:  # the page is full, or the budget ran out inside this group
            page.next_cursor = cursor(name, next_rank)
            return page
        if len(page.items) >= size or budget <= 0:
            later = index + 1
            page.next_cursor = cursor(names[later], 0) if later < len(groups) else None
            return page
    return page
