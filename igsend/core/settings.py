"""Settings shared by producers and workers, read once from the environment (and a ``.env`` file)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import lru_cache

from dotenv import load_dotenv

from igsend.core.errors import ConfigurationError
from igsend.core.redis_choice import DEFAULT_REDIS_URL, RedisChoice, announce, choose_redis_url

#: Media sends get this many times the text deadline: Meta fetches the file while the POST is open.
MEDIA_DEADLINE_FACTOR = 3
#: Room between a POST's deadline and its job lock (admission, the inline rate wait, recording the answer),
#: and again between the longest lock and the broker's visibility timeout.
DEADLINE_MARGIN = 5.0
#: IGSEND_UNKNOWN_OUTCOME's values, the default first.
UNKNOWN_OUTCOMES = ("reconcile", "dead-letter", "resend")


def positive_number(text: str) -> float | None:
    """The finite number above 0 that ``text`` spells (as ``float()`` reads it), else None: for settings that
    must be positive (API key rates, token intervals), each of which words its own error."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: must be a number (got {raw!r})") from None


def _positive(name: str, default: float) -> float:
    value = _float(name, default)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name}: must be a positive number of seconds (got {value!r})")
    return value


def _count(name: str, default: int) -> int:
    value = _float(name, float(default))
    if not value.is_integer() or value < 0:
        raise ConfigurationError(f"{name}: must be a whole number, 0 or more (got {value!r})")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Non-secret settings. Tokens are read only by ``workers.accounts``, never here."""

    redis_url: str = DEFAULT_REDIS_URL
    #: Why this Redis (igsend.core.redis_choice): IGSEND_REDIS_URL, a running `igsend up`, a group, the default.
    redis_source: str = "the default"
    #: How long a job in progress stays readable after its last change (seconds, default 7 days).
    result_ttl: int = 7 * 24 * 3600
    #: How long a delivered job's compact record stays (IGSEND_DELIVERED_TTL, default a day, like Celery's
    #: result_expires). Dead and unknown jobs stay with their DLQ entry until purged.
    delivered_ttl: int = 24 * 3600
    #: The DLQ's cap (IGSEND_DLQ_MAX): beyond it the oldest entries move to IGSEND_DLQ_ARCHIVE, a JSON-lines
    #: file the operator names; without one nothing is dropped and health checks say the DLQ is over its cap.
    dlq_max: int = 10_000
    dlq_archive: str | None = None
    #: Attempts per message before it is dead-lettered (transient errors, unknown error codes).
    max_attempts: int = 8
    #: A message older than this (seconds since it was accepted) is dead-lettered instead of retried.
    max_age: float = 24 * 3600
    #: Backoff: full jitter over min(cap, base * 2**attempt) seconds.
    retry_base: float = 1.0
    retry_cap: float = 300.0
    #: Window in which the same idempotency key (per account) returns the same job.
    idempotency_window: int = 24 * 3600
    #: What to do when a POST went out and its answer was lost: ``reconcile`` (default: ask Meta's Conversations
    #: API whether it arrived; workers/reconcile.py), ``dead-letter`` or ``resend``.
    unknown_outcome: str = "reconcile"
    #: When an ordered message dies: ``continue`` with the next of its conversation (default), or ``hold`` the
    #: conversation until the dead one is replayed or released (IGSEND_ORDERED_DEAD).
    ordered_dead: str = "continue"
    #: Where ``igsend demo``/``up`` keep the embedded Redis's data (AOF) and logs.
    data_dir: str = ".igsend"
    log_format: str = "text"
    #: Workers publish task events for Flower (three small publishes per message).
    task_events: bool = True
    #: Total deadline of one text-class POST, in seconds (IGSEND_SEND_DEADLINE). Everything that must outlast a
    #: POST derives from it, so they cannot drift: the media deadline, the job lock, the visibility timeout.
    send_deadline: float = 15.0
    #: Messages the dispatcher keeps on the Celery queue ahead of the workers (igsend.core.lanes): a new account's
    #: reply waits behind at most these and what the workers hold.
    dispatch_ahead: int = 200
    #: At most this many of one account's messages of one send class go to a worker as one Celery task,
    #: ``igsend.send_chunk`` (IGSEND_CHUNK; igsend.core.chunks): Celery's per-task cost is paid once per chunk.
    chunk: int = 50
    #: Seconds a published job may be missing from the broker (not queued, not in a worker's hands) before the
    #: sweeper publishes it again (IGSEND_LOST_AFTER): a lost message is sent within this plus 5 s.
    lost_after: float = 60.0
    #: The primary's name at the sentinels when IGSEND_REDIS_URL is ``sentinel://h1:26379;sentinel://h2:26379/0``
    #: (IGSEND_REDIS_MASTER).
    redis_master: str = "igsend"
    #: Replicas that must hold a producer's records and messages before the call returns, a job's admission before
    #: its POST, and its "delivered" record before the message is acknowledged (IGSEND_REDIS_REPLICA_ACKS; Redis
    #: WAIT). Set it to the number of replicas: fewer do not survive a forced failover. 0: off, no WAIT.
    replica_acks: int = 0
    #: Seconds WAIT may take before the producer (or worker) gives up (IGSEND_REDIS_REPLICA_TIMEOUT).
    replica_timeout: float = 1.0
    #: The TOML file of Redis groups (IGSEND_GROUPS, igsend.core.groups): producers send each account's messages
    #: to its group's Redis. None: one group, IGSEND_REDIS_URL.
    groups_file: str | None = None
    #: The group this process serves (IGSEND_GROUP, a name of IGSEND_GROUPS): its redis_url replaces
    #: IGSEND_REDIS_URL, and a worker serves only the group's accounts.
    group: str | None = None

    def deadline(self, send_class: str) -> float:
        """Total seconds one POST of this class may take, answer included."""
        return self.send_deadline * (MEDIA_DEADLINE_FACTOR if send_class == "media" else 1)

    def lock_ttl(self, send_class: str) -> float:
        """How long a job's lock lives: its POST's deadline plus the margin, so it never expires under a POST."""
        return self.deadline(send_class) + DEADLINE_MARGIN

    @property
    def visibility_timeout(self) -> int:
        """Seconds before the broker hands an unacknowledged message to another worker: past the longest lock,
        so a live POST is never raced by a second copy of its job."""
        return math.ceil(self.lock_ttl("media") + DEADLINE_MARGIN)

    @classmethod
    def from_env(cls) -> Settings:
        load_dotenv(os.environ.get("IGSEND_ENV_FILE", ".env"), override=False)
        env = os.environ
        policy = env.get("IGSEND_UNKNOWN_OUTCOME", cls.unknown_outcome)
        if policy not in UNKNOWN_OUTCOMES:
            raise ConfigurationError(f"IGSEND_UNKNOWN_OUTCOME: must be reconcile, dead-letter or resend "
                                     f"(got {policy!r})")
        ordered_dead = env.get("IGSEND_ORDERED_DEAD") or cls.ordered_dead
        if ordered_dead not in ("continue", "hold"):
            raise ConfigurationError(f"IGSEND_ORDERED_DEAD: must be continue or hold (got {ordered_dead!r})")
        data_dir = env.get("IGSEND_DATA_DIR") or cls.data_dir
        choice = choose_redis_url(env, data_dir)
        redis_url, redis_source = choice.url, choice.source
        redis_master = env.get("IGSEND_REDIS_MASTER") or cls.redis_master
        groups_file = env.get("IGSEND_GROUPS") or None
        group = env.get("IGSEND_GROUP") or None
        if group is not None:
            from igsend.core.groups import load_groups

            if groups_file is None:
                raise ConfigurationError(f"IGSEND_GROUP: names a group ({group!r}) but IGSEND_GROUPS names no "
                                         "groups file")
            groups = load_groups(groups_file)
            if group not in groups:
                raise ConfigurationError(f"IGSEND_GROUP: no group {group!r} in {groups_file} (groups: "
                                         f"{', '.join(groups)})")
            redis_url, redis_master = groups[group].redis_url, groups[group].redis_master or redis_master
            redis_source = f"group {group} of IGSEND_GROUPS ({groups_file})"
        return cls(
            redis_url=redis_url,
            redis_source=redis_source,
            result_ttl=int(_float("IGSEND_RESULT_TTL", cls.result_ttl)),
            delivered_ttl=int(_positive("IGSEND_DELIVERED_TTL", cls.delivered_ttl)),
            dlq_max=int(_positive("IGSEND_DLQ_MAX", cls.dlq_max)),
            dlq_archive=env.get("IGSEND_DLQ_ARCHIVE") or None,
            max_attempts=int(_float("IGSEND_MAX_ATTEMPTS", cls.max_attempts)),
            max_age=_float("IGSEND_MAX_AGE", cls.max_age),
            retry_base=_float("IGSEND_RETRY_BASE", cls.retry_base),
            retry_cap=_float("IGSEND_RETRY_CAP", cls.retry_cap),
            idempotency_window=int(_float("IGSEND_IDEMPOTENCY_WINDOW", cls.idempotency_window)),
            unknown_outcome=policy,
            ordered_dead=ordered_dead,
            data_dir=data_dir,
            log_format=env.get("IGSEND_LOG_FORMAT") or cls.log_format,
            task_events=(env.get("IGSEND_TASK_EVENTS") or "1") not in ("0", "false", "no", "off"),
            send_deadline=_positive("IGSEND_SEND_DEADLINE", cls.send_deadline),
            dispatch_ahead=max(1, _count("IGSEND_DISPATCH_AHEAD", cls.dispatch_ahead)),
            chunk=max(1, _count("IGSEND_CHUNK", cls.chunk)),
            lost_after=_positive("IGSEND_LOST_AFTER", cls.lost_after),
            redis_master=redis_master,
            replica_acks=_count("IGSEND_REDIS_REPLICA_ACKS", cls.replica_acks),
            replica_timeout=_positive("IGSEND_REDIS_REPLICA_TIMEOUT", cls.replica_timeout),
            groups_file=groups_file,
            group=group,
        )


#: The Redis a block of code works on instead of the process's own (url, sentinel primary's name): set by
#: ``igsend.core.routing`` while a producer works on one group's messages or jobs.
_route: ContextVar[tuple[str, str | None] | None] = ContextVar("igsend_route", default=None)


@contextmanager
def using_redis(url: str | None, master: str | None = None) -> Iterator[None]:
    """Within this block (this thread or task), :func:`get_settings` names ``url`` as the Redis, so every client
    and the Celery app that follow the settings (igsend.core.store, igsend.core.celery_app) use it. None: no change."""
    if url is None:
        yield
        return
    token = _route.set((url, master))
    try:
        yield
    finally:
        _route.reset(token)


class _SettingsReader:
    """``get_settings()``: the settings read once from the environment, with the Redis of the block's group (see
    :func:`using_redis`); ``get_settings.cache_clear()`` reads the environment again on next use."""

    @staticmethod
    @lru_cache(maxsize=1)
    def _base() -> Settings:
        settings = Settings.from_env()
        announce(RedisChoice(settings.redis_url, settings.redis_source))
        return settings

    @staticmethod
    @lru_cache(maxsize=64)
    def _routed(base: Settings, url: str, master: str | None) -> Settings:
        return replace(base, redis_url=url, redis_master=master or base.redis_master)

    def __call__(self) -> Settings:
        base = self._base()
        route = _route.get()
        if route is None or (route[0] == base.redis_url and route[1] in (None, base.redis_master)):
            return base
        return self._routed(base, *route)

    def cache_clear(self) -> None:
        self._base.cache_clear()
        self._routed.cache_clear()


get_settings = _SettingsReader()
