"""Redis groups (``IGSEND_GROUPS``): independent Redis servers, each holding whole accounts, read from TOML::

    [groups.eu]
    redis_url = "rediss://:PASSWORD@redis-eu:6380/0"   # any address IGSEND_REDIS_URL takes (sentinel:// too)
    accounts = ["shop", "default"]
    # redis_master = "igsend-eu"                        # optional, sentinel:// only: default IGSEND_REDIS_MASTER

    [groups.us]
    redis_url = "sentinel://s1:26379;sentinel://s2:26379/0"
    accounts = ["news"]

Kombu cannot use Redis Cluster (CELERY_NOTES.md, "Scaling out"), so igsend scales past one Redis by groups that
share nothing: each has its own queue, workers, scheduler, sweeper, DLQ, limiter and idempotency keys. Producers
send a message to its account's group; a job id names its group (``eu.<uuid>``) so it is found without asking
every group. Parsing and id rules only: nothing here connects (``igsend.core.routing`` does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from igsend.core.errors import ConfigurationError
from igsend.core.redis_url import is_sentinel_url, safe_url, sentinel_parts
from igsend.core.toml_files import read_toml

#: A group's name: it starts every job id of the group, so it holds no '.' and nothing a URL would escape.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: Between the group's name and the uuid in a job id.
SEPARATOR = "."
#: What redis-py (``Redis.from_url``) and kombu take, plus igsend's ``sentinel://`` (igsend.core.store).
SCHEMES = ("redis", "rediss", "unix", "sentinel")
_FIELDS = {"redis_url", "accounts", "redis_master"}


@dataclass(frozen=True)
class Group:
    name: str
    redis_url: str
    accounts: tuple[str, ...]
    #: The primary's name at the sentinels (``sentinel://`` only); None: IGSEND_REDIS_MASTER.
    redis_master: str | None = None

    def public(self) -> dict[str, object]:
        """What may be shown anywhere: the address without its password."""
        return {"group": self.name, "redis": safe_url(self.redis_url), "accounts": list(self.accounts)}


def load_groups(path: str) -> dict[str, Group]:
    """The groups of the file, in its order; a :class:`ConfigurationError` naming the file, the group and the field
    on the first mistake."""
    data = read_toml(path, setting="IGSEND_GROUPS", error=ConfigurationError)
    unknown = sorted(set(data) - {"groups"})
    if unknown:
        raise ConfigurationError(f"IGSEND_GROUPS: {path}: unknown table {unknown[0]!r} (the file holds only "
                                 "[groups.NAME] tables)")
    table = data.get("groups")
    if not isinstance(table, dict) or not table:
        raise ConfigurationError(f"IGSEND_GROUPS: {path}: no group: declare at least one [groups.NAME] with "
                                 "redis_url and accounts")
    groups: dict[str, Group] = {}
    owner: dict[str, str] = {}
    for name, spec in table.items():
        where = f"IGSEND_GROUPS: {path}: groups.{name}"
        if not NAME.fullmatch(name):
            raise ConfigurationError(f"{where}: a group's name is 1-32 of a-z, 0-9, '_' and '-', starting with a "
                                     "letter or digit (it starts the job ids of the group)")
        if not isinstance(spec, dict):
            raise ConfigurationError(f"{where}: must be a table ([groups.{name}]), got {type(spec).__name__}")
        extra = sorted(set(spec) - _FIELDS)
        if extra:
            raise ConfigurationError(f"{where}: unknown field {extra[0]!r} (known: {', '.join(sorted(_FIELDS))})")
        url = check_url(spec.get("redis_url"), f"{where}.redis_url")
        accounts = spec.get("accounts")
        if not isinstance(accounts, list) or not all(isinstance(a, str) and a for a in accounts):
            raise ConfigurationError(f"{where}.accounts: must be a list of account names "
                                     f"(got {accounts!r})")
        for account in accounts:
            if account in owner:
                where_else = "twice in this group" if owner[account] == name else f"also in groups.{owner[account]}"
                raise ConfigurationError(f"{where}.accounts: the account {account!r} is {where_else}; an account "
                                         "belongs to exactly one group")
            owner[account] = name
        master = spec.get("redis_master")
        if master is not None and (not isinstance(master, str) or not master):
            raise ConfigurationError(f"{where}.redis_master: must be the primary's name at the sentinels "
                                     f"(got {master!r})")
        if master is not None and not is_sentinel_url(url):
            raise ConfigurationError(f"{where}.redis_master: only for a sentinel:// redis_url")
        groups[name] = Group(name=name, redis_url=url, accounts=tuple(accounts), redis_master=master)
    return groups


def check_url(url: object, where: str) -> str:
    """A Redis address igsend can use (``redis://``, ``rediss://``, ``unix://``, ``sentinel://``), else a
    ConfigurationError naming ``where``; the message never shows the password."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{where}: required, a Redis URL (redis://, rediss://, unix:// or sentinel://)")
    if is_sentinel_url(url):
        try:
            sentinel_parts(url)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"{where}: not a Redis URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(f"{where}: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)} "
                                 f"(got {safe_url(url)!r})")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"{where}: no host in {safe_url(url)!r}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigurationError(f"{where}: the database must be a number (got {db!r} in {safe_url(url)!r})")
    return url


def job_id(group: str | None, uuid: str) -> str:
    """The id of a new job: the bare uuid without groups (as before groups existed), else ``GROUP.uuid``."""
    return uuid if group is None else f"{group}{SEPARATOR}{uuid}"


def group_named_by(job_id: str) -> str | None:
    """The group a job id names (``eu`` of ``eu.<uuid>``), or None for an id that names none (a bare uuid, or an
    id a raw Celery client chose)."""
    name, separator, rest = job_id.partition(SEPARATOR)
    return name if separator and rest and NAME.fullmatch(name) else None
