"""The Redis connection and the key layout that producers and workers share.

Every igsend key starts with ``igsend:`` so an operator can tell them from Celery's own keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from igsend.core.redis_url import is_sentinel_url, safe_url, sentinel_parts
from igsend.core.sentinel import PrimaryConnection, SentinelRedis
from igsend.core.settings import get_settings

PREFIX = "igsend:"


def job_key(job_id: str) -> str:
    """Hash holding one job's status record."""
    return f"{PREFIX}job:{job_id}"


def attempts_key(job_id: str) -> str:
    """List of the job's attempts (JSON), oldest first."""
    return f"{PREFIX}job:{job_id}:attempts"


def done_key(job_id: str) -> str:
    """A delivered job, compacted to one string (``igsend.core.records``), kept for the delivered retention."""
    return f"{PREFIX}done:{job_id}"


def lock_key(job_id: str) -> str:
    """Held while one execution of the job may be talking to Meta; stops a redelivered copy from racing it."""
    return f"{PREFIX}lock:{job_id}"


#: Stands for "no idempotency key" in the create_job script (an igsend key name, so ACL patterns cover it).
NO_IDEMPOTENCY_KEY = f"{PREFIX}idem:"


def idempotency_key(account: str, key: str) -> str:
    return f"{PREFIX}idem:{account}:{key}"


def account_key(account: str) -> str:
    """Hash of an account's runtime state: health, pause, usage-driven slowdown."""
    return f"{PREFIX}account:{account}"


def token_key(account: str) -> str:
    """Hash of what workers learned about an account's token (igsend.core.account_state, workers.tokens): when it
    expires, its last check or refresh and what went wrong, and a fingerprint naming which token that was. Never
    the token."""
    return f"{PREFIX}token:{account}"


def token_lease_key(account: str) -> str:
    """Held by the one worker checking or refreshing the account's token right now."""
    return f"{PREFIX}token-lease:{account}"


def limiter_key(account: str, send_class: str) -> str:
    return f"{PREFIX}rl:{account}:{send_class}"


def conversation_key(account: str, recipient: str) -> str:
    """The ordered jobs of one conversation not yet done with, scored by their place (enqueue order)."""
    return f"{PREFIX}conv:{account}:{recipient}"


def conversation_counter_key(account: str, recipient: str) -> str:
    return f"{PREFIX}conv-seq:{account}:{recipient}"


#: Stands for "not ordered" in the admission script (an igsend key name, so ACL key patterns cover it).
NO_CONVERSATION_KEY = f"{PREFIX}conv:"


def upload_key(account: str, sha256: str) -> str:
    """A local file a producer staged for the account's worker to upload (bytes and what they are), with a TTL."""
    return f"{PREFIX}upload:{account}:{sha256}"


def attachment_key(account: str, sha256: str) -> str:
    """The attachment id Meta gave for these bytes (content hash) on this account: sent by id, never re-uploaded."""
    return f"{PREFIX}attachment:{account}:{sha256}"


def held_key(account: str) -> str:
    """Jobs held back while their account is marked broken (sorted by when they were held)."""
    return f"{PREFIX}held:{account}"


#: Jobs whose Celery message should be in the broker now, scored by when it was published (Redis clock).
#: Admission takes a job out; the sweeper (workers/sweeper.py) republishes one the broker lost.
PENDING_KEY = f"{PREFIX}pending"
#: Jobs admitted to POST, scored by when their lock expires; recording the outcome takes them out.
INFLIGHT_KEY = f"{PREFIX}inflight"
#: A capped stream of finished jobs (id, status, account, kind, message id, time) for other apps to consume.
OUTCOMES_KEY = f"{PREFIX}outcomes"
DELAYED_KEY = f"{PREFIX}delayed"  # job ids waiting for a retry or a rate slot, scored by due time
DLQ_KEY = f"{PREFIX}dlq"  # job id -> dead-letter entry (JSON)
DLQ_INDEX_KEY = f"{PREFIX}dlq:index"  # job ids scored by when they died
ACCOUNTS_INDEX_KEY = f"{PREFIX}accounts"  # names of accounts that have runtime state
STATS_KEY = f"{PREFIX}stats"  # counters: unknown outcomes, skipped redeliveries, ...


class _Retry(Retry):
    """redis-py's Retry, except that a wrong password or a refused command is final: retrying them only
    turns a clear configuration error into a long hang (redis-py counts AuthenticationError as a
    ConnectionError, and nests the connect retry inside the command retry)."""

    def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False) -> Any:
        def retryable(error: Exception) -> bool:
            if isinstance(error, (redis.AuthenticationError, redis.ResponseError)):
                return False
            return is_retryable(error) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


#: Long-running processes (workers, the API, apps that import producers) ride out a Redis restart: redis-py
#: nests its connect retry inside its command retry, so up to 9 x 9 connect attempts with backoff, and a
#: timed-out reply is retried too. A command a person waits on (the CLI) retries only a refused or reset
#: connection, once, and never a timeout (which already waited): refused fails in well under a second, an
#: address that drops packets after the 1 s connect timeout, a peer that never answers after 5 s.
_POLICIES: dict[str, dict[str, Any]] = {
    "patient": {"socket_connect_timeout": 5, "socket_timeout": 10, "retries": 8, "cap": 2.0,
                "retry_on_error": [redis.ConnectionError, redis.TimeoutError]},
    "brief": {"socket_connect_timeout": 1, "socket_timeout": 5, "retries": 1, "cap": 0.1,
              "retry_on_error": [redis.ConnectionError]},
}
_default_policy = "patient"


@contextmanager
def brief_connections() -> Iterator[None]:
    """Within this block, this process's Redis clients fail fast (one retry, 0.5 s connect timeout): for
    commands a person waits on, where a clear error within seconds beats a silent minute of retries."""
    global _default_policy
    previous, _default_policy = _default_policy, "brief"
    try:
        yield
    finally:
        _default_policy = previous


def redis_from_url(url: str, **kwargs: Any) -> redis.Redis:
    """``redis.Redis.from_url``, plus ``sentinel://...``: a client of the primary that the sentinels name now
    (``IGSEND_REDIS_MASTER``), which follows a failover by itself (redis-py's ``Sentinel.master_for``: a
    connection to a demoted primary is dropped and the next one asks the sentinels again)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    hosts, db, username, password = sentinel_parts(url)
    timeouts: dict[str, Any] = {key: kwargs[key] for key in ("socket_connect_timeout", "socket_timeout")
                                if key in kwargs}
    sentinels = Sentinel(hosts, sentinel_kwargs=timeouts)
    credentials: dict[str, Any] = {"username": username, "password": password} if password is not None else {}
    return cast(redis.Redis, sentinels.master_for(get_settings().redis_master, redis_class=SentinelRedis, db=db,
                                                  **credentials, connection_class=PrimaryConnection, **kwargs))


@lru_cache(maxsize=64)  # per Redis group and retry policy
def _client(url: str, policy: str = "patient") -> redis.Redis:
    settings = _POLICIES[policy]
    supported = tuple(settings["retry_on_error"])
    return redis_from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=settings["socket_connect_timeout"],
        socket_timeout=settings["socket_timeout"],
        health_check_interval=15,
        retry=_Retry(ExponentialBackoff(cap=settings["cap"], base=0.05), settings["retries"], supported),
        retry_on_error=list(supported),
    )


def get_redis(url: str | None = None, *, patient: bool | None = None) -> redis.Redis:
    """The process-wide client for ``url`` (default: ``IGSEND_REDIS_URL``).

    ``patient`` picks the retry policy: True rides out a Redis restart, False fails within seconds; None
    uses the process default (patient, except inside :func:`brief_connections`)."""
    policy = _default_policy if patient is None else ("patient" if patient else "brief")
    return _client(url or get_settings().redis_url, policy)


def describe_redis_error(exc: BaseException, url: str | None = None) -> str:
    """One line for a person: which Redis (password removed), and what went wrong."""
    target = safe_url(url or get_settings().redis_url)
    if isinstance(exc, redis.AuthenticationError):
        why = f"authentication failed ({exc}); check the password in IGSEND_REDIS_URL"
    elif certificate_refused(exc):
        why = (f"its TLS certificate does not verify ({_first_line(exc)}); check ssl_ca_certs (and ssl_certfile/"
               "ssl_keyfile) in IGSEND_REDIS_URL")
    elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        why = (f"{str(exc).rstrip('.') or type(exc).__name__}; is it running? `igsend up` runs one with the whole "
               "local stack, or set IGSEND_REDIS_URL")
    else:
        why = str(exc) or type(exc).__name__
    return f"cannot reach Redis at {target}: {why}"


def certificate_refused(exc: BaseException) -> bool:
    """Whether a connection failed because a TLS certificate did not verify (a setting, not an outage)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def redis_warnings(client: redis.Redis | None = None) -> list[str]:
    """Server settings that put queued messages at risk, one sentence each; empty when all is well.

    Eviction can drop any key, queued messages included; with neither AOF nor RDB snapshots a restart
    loses the whole queue. Managed Redis often refuses CONFIG: then say so instead of failing.
    """
    client = client or get_redis()
    try:
        policy = _config(client, "maxmemory-policy")
        appendonly = _config(client, "appendonly")
        save = _config(client, "save")
    except redis.ResponseError as exc:
        return [f"could not check Redis's eviction and persistence settings (CONFIG GET refused: {exc}); "
                "make sure maxmemory-policy is noeviction and AOF or RDB persistence is on"]
    warnings = []
    if policy is not None and policy != "noeviction":
        warnings.append(f"Redis maxmemory-policy is {policy!r}, not 'noeviction': when memory runs out Redis "
                        "may evict queued messages and job records")
    if appendonly is not None and save is not None and appendonly != "yes" and not save.strip():
        warnings.append("Redis persistence is off (appendonly no, no RDB save points): a Redis restart loses "
                        "every queued message; set appendonly yes")
    dead, cap = client.zcard(DLQ_INDEX_KEY), get_settings().dlq_max
    if dead > cap:
        warnings.append(f"the DLQ holds {dead} entries, over IGSEND_DLQ_MAX ({cap}): set IGSEND_DLQ_ARCHIVE to "
                        "move the oldest to a file, or `igsend dlq purge`")
    warnings.extend(replica_warnings(client))
    share = memory_share(client)
    if share is not None and share >= WARN_FROM:
        warnings.append(f"Redis is {share:.0%} full (maxmemory): from 95 % producers refuse new messages; "
                        "purge the DLQ, shorten IGSEND_DELIVERED_TTL or give Redis more memory")
    return warnings


def replica_warnings(client: redis.Redis) -> list[str]:
    """IGSEND_REDIS_REPLICA_ACKS against the replicas the primary has now, one sentence when they disagree.

    Acks must equal the replicas: a forced failover re-points them one at a time, so a write fewer of them
    confirmed can still be dropped (docs/redis.md, Sentinel); more acks than replicas online refuse every message."""
    try:
        replicas = int(client.info("replication").get("connected_slaves") or 0)
    except redis.ResponseError:
        return []
    acks = get_settings().replica_acks
    if acks > replicas:
        return [f"IGSEND_REDIS_REPLICA_ACKS is {acks} but the primary has {replicas} replica(s) online: producers "
                "are refused (NotReplicated) and workers send nothing until enough replicas are back"]
    if replicas and acks < replicas:
        return [f"IGSEND_REDIS_REPLICA_ACKS is {acks} but the primary has {replicas} replica(s): a failover can "
                f"lose accepted messages and send one in flight twice; set IGSEND_REDIS_REPLICA_ACKS={replicas}"]
    return []


def _config(client: redis.Redis, name: str) -> str | None:
    value = client.config_get(name).get(name)
    return None if value is None else str(value)

def memory_share(client: redis.Redis) -> float | None:
    """used_memory / maxmemory, or None when Redis has no maxmemory (or will not say)."""
    try:
        info = client.info("memory")
    except redis.ResponseError:
        return None
    limit = int(info.get("maxmemory") or 0)
    return int(info.get("used_memory") or 0) / limit if limit else None


#: From this share of maxmemory, health checks warn.
WARN_FROM = 0.80


def forget_connections() -> None:
    """Read the settings again and reconnect on next use (after changing ``IGSEND_REDIS_URL`` in-process). The
    Celery app follows by itself: ``igsend.core.celery_app.get_app`` builds a new one for settings read anew."""
    get_settings.cache_clear()
    _client.cache_clear()
