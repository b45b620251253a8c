"""Who is listening: worker heartbeats and the accounts the workers serve, kept in Redis.

Each worker process keeps a key ``igsend:workers:{hostname}`` alive (a short TTL, refreshed every few
seconds by a thread started when the worker is ready) holding its hostname, pid and the public part of every
account it serves (``workers.accounts.Account.public()``: name, id, login kind, app, budgets; never a
token). The index ``igsend:workers`` lists the hostnames, so a reader needs no SCAN of the keyspace. Every
account a worker ever served is also kept in ``igsend:workers-accounts`` (no TTL): when every worker is
down for a moment (a deploy), producers still know which names exist.

Producers read all of it in one round trip, cached for :data:`CACHE_SECONDS`, so a bulk enqueue does not pay
a round trip per message:

- a live worker serves the account: queue;
- live workers, none serving it: refuse (:class:`igsend.core.errors.UnknownAccount`), naming the accounts;
- no live worker: queue, with :func:`no_worker_warning` as a warning; refuse only a name that no worker ever
  served, once some worker registered (a fresh install, where none ever did, queues everything).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from igsend.core.errors import UnknownAccount
from igsend.core.redis_url import redis_address
from igsend.core.settings import get_settings
from igsend.core.store import PREFIX, get_redis

log = logging.getLogger("igsend.presence")

WORKERS_KEY = f"{PREFIX}workers"  # set of hostnames that announced themselves
KNOWN_ACCOUNTS_KEY = f"{PREFIX}workers-accounts"  # account name -> public JSON, every account ever served
#: A heartbeat lives this long; workers refresh it every HEARTBEAT_EVERY seconds.
HEARTBEAT_TTL = 15
HEARTBEAT_EVERY = 5.0
#: How long a producer trusts what it read.
CACHE_SECONDS = 2.0

def no_worker_running() -> str:
    """``no igsend worker is running on the Redis at HOST:PORT db N``: naming the Redis looked at, since a worker
    may well be running on another one (the one this process chose: igsend.core.redis_choice)."""
    return f"no igsend worker is running on the Redis at {redis_address(get_settings().redis_url)}"


def no_worker_warning() -> str:
    """The warning of sending while no worker is alive."""
    return (f"{no_worker_running()}: the message is queued and waits for one; start one with `igsend worker` "
            "(or `igsend up` for the whole local stack)")


def worker_key(hostname: str) -> str:
    return f"{WORKERS_KEY}:{hostname}"


# KEYS: the index, the known-accounts hash. ARGV: the heartbeat key prefix. Returns [hostname, json, ...] of
# the live workers and the known-accounts hash flattened, in one round trip; it only reads.
_READ = """
local live = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. name)
  if value then
    table.insert(live, name)
    table.insert(live, value)
  end
end
return {live, redis.call('HGETALL', KEYS[2])}
"""


@dataclass(frozen=True)
class Presence:
    """What producers know about the workers at one moment."""

    #: hostname -> {"hostname", "pid", "accounts": [public account dicts], "seen"}
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every account a worker ever served: name -> public dict
    known: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def alive(self) -> int:
        return len(self.workers)

    def served(self) -> dict[str, dict[str, Any]]:
        """The accounts live workers serve, by name."""
        return {account["name"]: account for worker in self.workers.values() for account in worker["accounts"]}

    def serving(self, account: str) -> int:
        """How many live workers serve ``account``."""
        return sum(any(a["name"] == account for a in w["accounts"]) for w in self.workers.values())

    def check(self, account: str) -> None:
        """Raise UnknownAccount when no worker would send as ``account`` (see the module's rules)."""
        names = self.served() if self.workers else self.known
        if names and account not in names:
            raise UnknownAccount(account, sorted(names))

    def warnings(self) -> list[str]:
        return [] if self.workers else [no_worker_warning()]


_cache: dict[str, tuple[float, Presence]] = {}
_cache_lock = threading.Lock()


def read(client: redis.Redis | None = None) -> Presence:
    """What the workers announced, read now (one round trip)."""
    client = client or get_redis()
    live, known = client.eval(_READ, 2, WORKERS_KEY, KNOWN_ACCOUNTS_KEY, worker_key(""))
    return Presence(_decoded(live), _decoded(known))


def _decoded(flat: list[Any]) -> dict[str, Any]:
    """A script's flat [name, JSON, name, JSON, ...] reply as a dict; an entry that is not JSON is skipped."""
    found = {}
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        try:
            found[_text(name)] = json.loads(value)
        except ValueError:
            continue
    return found


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def current(client: redis.Redis | None = None) -> Presence:
    """:func:`read`, cached for CACHE_SECONDS per Redis: what producers consult before queuing."""
    client = client or get_redis()
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db')}:{kwargs.get('path', '')}"
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(where)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    presence = read(client)
    with _cache_lock:
        _cache[where] = (now, presence)
    return presence


def forget() -> None:
    """Read the registry again on next use (tests, or after starting or stopping a worker in-process)."""
    with _cache_lock:
        _cache.clear()


def check_accounts(accounts: Iterable[str], client: redis.Redis | None = None) -> list[str]:
    """Raise UnknownAccount for the first account no worker would serve; return the warnings of sending now
    (:func:`no_worker_warning` when no worker is alive)."""
    presence = current(client)
    for account in dict.fromkeys(accounts):
        presence.check(account)
    return presence.warnings()


# --- the worker side -------------------------------------------------------------------------------------------

class Heartbeat:
    """A worker process's announcement, refreshed by a daemon thread until :meth:`stop`."""

    def __init__(self, hostname: str | None, accounts: list[dict[str, Any]], client: redis.Redis | None = None,
                 *, every: float = HEARTBEAT_EVERY, ttl: int = HEARTBEAT_TTL):
        self.hostname = hostname or f"igsend-{os.getpid()}@{socket.gethostname()}"
        self.accounts = accounts
        self.client = client or get_redis()
        self.every = every
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.time()

    def beat(self) -> None:
        value = json.dumps({"hostname": self.hostname, "pid": os.getpid(), "started": self.started,
                            "seen": time.time(), "accounts": self.accounts})
        pipe = self.client.pipeline(transaction=False)
        pipe.set(worker_key(self.hostname), value, ex=self.ttl)
        pipe.sadd(WORKERS_KEY, self.hostname)
        if self.accounts:
            pipe.hset(KNOWN_ACCOUNTS_KEY, mapping={a["name"]: json.dumps(a) for a in self.accounts})
        pipe.execute()
        self._prune()

    def _prune(self) -> None:
        """Drop hostnames whose heartbeat expired from the index (a worker that died without saying so)."""
        names = cast(list[str], list(self.client.smembers(WORKERS_KEY)))
        if not names:
            return
        gone = [name for name, exists in zip(names, self.client.mget([worker_key(n) for n in names]), strict=True)
                if exists is None]
        if gone:
            self.client.srem(WORKERS_KEY, *gone)

    def start(self) -> None:
        try:
            self.beat()
        except redis.RedisError as exc:  # the thread keeps trying; a heartbeat never stops a worker
            log.warning("could not announce this worker in Redis: %s", exc)
        self._thread = threading.Thread(target=self._run, name="igsend-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("could not refresh this worker's heartbeat: %s", exc)

    def stop(self) -> None:
        """Stop beating and withdraw at once, so producers say "no worker" without waiting out the TTL."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(worker_key(self.hostname))
            pipe.srem(WORKERS_KEY, self.hostname)
            pipe.execute()
        except redis.RedisError:
            pass
