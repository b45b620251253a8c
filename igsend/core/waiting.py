"""Waiting for a job to end without polling: read its status once, then sleep until the outcome stream names it.

Every way a job becomes final (delivered, dead, unknown, cancelled) adds an entry naming it to the outcome stream
``igsend:outcomes``, in the same step as the status write or right after it (``lua/finish.lua``, ``lua/cancel.lua``,
``records.Outcomes.dead``, ``records.abandon``). So a waiter needs no loop of status reads: per process and per
Redis, one reader thread blocks on that stream (``XREAD BLOCK``) for every waiter at once, and wakes the waiters
of the jobs each entry names (a registry of job id -> :class:`threading.Event`). A waiter registers first, then
reads the status: an end written after that read has its entry read after the registration, so none is missed
between the check and the sleep. Each wakeup reads the status again; a spurious one costs one read.

The reader's connection is its own (a blocking XREAD holds it), one per Redis a process waits on, whatever the
number of waiters; it stops when nobody waits. With groups (``IGSEND_GROUPS``) the caller picks the Redis: call
:func:`wait_for` inside ``routing.for_job(job_id)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from igsend.core.records import JobStatus
from igsend.core.settings import get_settings
from igsend.core.store import OUTCOMES_KEY, redis_from_url

log = logging.getLogger("igsend.waiting")

#: Milliseconds one XREAD of the reader blocks: what an idle reader costs Redis (one command per this long, for
#: every waiter of the process together), and how long it lingers after its last waiter left.
BLOCK_MS = 10_000
#: Entries one XREAD takes at most (a burst of outcomes is read in a few round trips, not one each).
BATCH = 1000
#: A waiter reads the status again at least this often, wakeup or not: the rare job whose end no entry announces
#: (its record expired while it waited, or the stream was trimmed past the reader while Redis was away).
RECHECK_SECONDS = 60.0
#: Status reads waiters make at once in a process. An outcome burst wakes many waiters together; unbounded, their
#: reads would take more connections than the shared client's pool holds (redis-py's default: 100).
CONCURRENT_READS = 32
_reads = threading.BoundedSemaphore(CONCURRENT_READS)


def reading() -> threading.BoundedSemaphore:
    """Hold it (``with waiting.reading():``) around a read a woken waiter makes (the answer after a wait)."""
    return _reads


#: Seconds the reader waits before reading again after a Redis error (the waiters are woken to read their
#: status themselves meanwhile).
ERROR_PAUSE = 0.5


class _Reader:
    """One Redis's outcome stream, read by one thread for every waiter of this process on that Redis."""

    def __init__(self, url: str, master: str) -> None:
        self.url, self.master = url, master
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._cursor = "0-0"
        #: XREADs made since the process started (for ``ops/bench waiters`` and tests)
        self.reads = 0

    def _connect(self) -> redis.Redis:
        # Made in the caller's thread: a sentinel:// URL reads the group's master name from the settings there.
        if self._client is None:
            self._client = redis_from_url(self.url, decode_responses=True, socket_connect_timeout=5,
                                          socket_timeout=BLOCK_MS / 1000 + 10, health_check_interval=0)
        return self._client

    def register(self, job_id: str) -> threading.Event:
        """An event set when an outcome entry names ``job_id`` (or the reader lost track: read the status
        again). The reader's place in the stream is fixed before this returns, so the status read after it
        misses no end."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(event)
            if self._thread is None:
                try:
                    client = self._connect()
                    last = cast(list[tuple[str, Any]], client.xrevrange(OUTCOMES_KEY, count=1))
                except Exception:
                    self._drop(job_id, event)
                    raise
                self._cursor = last[0][0] if last else "0-0"
                self._thread = threading.Thread(target=self._run, args=(client,), daemon=True,
                                                name=f"igsend-outcomes-reader-{len(_readers)}")
                self._thread.start()
        return event

    def unregister(self, job_id: str, event: threading.Event) -> None:
        with self._lock:
            self._drop(job_id, event)

    def _drop(self, job_id: str, event: threading.Event) -> None:
        events = self._waiters.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waiters[job_id]

    def waiting(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._waiters.values())

    def _run(self, client: redis.Redis) -> None:
        while True:
            with self._lock:
                if not self._waiters:
                    self._thread = None  # the next register starts another reader, from the stream's end then
                    return
                cursor = self._cursor
            try:
                self.reads += 1
                answer = cast(list[Any], client.xread({OUTCOMES_KEY: cursor}, count=BATCH, block=BLOCK_MS))
            except Exception as exc:  # Redis away: every waiter reads its status itself; read on from here later
                with self._lock:
                    if not self._waiters:  # nobody waits any more (a process stopping with its Redis): no news
                        self._thread = None
                        return
                log.warning("reading %s failed (%s); waking every waiter", OUTCOMES_KEY, exc)
                self._wake_all()
                time.sleep(ERROR_PAUSE)
                continue
            for _, entries in answer or []:
                woken: list[threading.Event] = []
                with self._lock:
                    for entry_id, fields in entries:
                        self._cursor = entry_id
                        woken.extend(self._waiters.get(fields.get("id") or "", ()))
                for event in woken:
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for group in self._waiters.values() for event in group]
        for event in events:
            event.set()


_readers: dict[tuple[str, str], _Reader] = {}
_readers_lock = threading.Lock()
_pid = os.getpid()


def reader() -> _Reader:
    """The reader of the Redis the settings name now (the job's group, inside ``routing.for_job``)."""
    global _pid
    settings = get_settings()
    key = (settings.redis_url, settings.redis_master)
    with _readers_lock:
        if os.getpid() != _pid:  # a forked child (gunicorn's workers): the parent's threads did not come along
            _readers.clear()
            _pid = os.getpid()
        found = _readers.get(key)
        if found is None:
            found = _readers[key] = _Reader(*key)
        return found


def wait_for(job_id: str, read_status: Callable[[], JobStatus], timeout: float | None, *,
             not_found_grace: float = 0.0) -> JobStatus:
    """Wait until ``read_status()`` (the job's status, read from the same Redis) is final, or ``timeout`` seconds
    pass (None: no limit); return the last status read. Reads it once, then once per outcome entry naming the job.

    ``not_found`` ends the wait only once it has lasted ``not_found_grace`` seconds (or the timeout, if shorter):
    a raw Celery client's job is briefly nowhere while a worker takes its message and makes its record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    readers = reader()
    event = readers.register(job_id)
    try:
        missing_since: float | None = None
        while True:
            with _reads:
                status = read_status()
            if status.final:
                return status
            now = time.monotonic()
            if status is JobStatus.NOT_FOUND:
                missing_since = now if missing_since is None else missing_since
                if now - missing_since >= not_found_grace or (deadline is not None and now >= deadline):
                    return status
                pause = missing_since + not_found_grace - now
            else:
                missing_since = None
                pause = RECHECK_SECONDS
            if deadline is not None:
                if now >= deadline:
                    return status
                pause = min(pause, deadline - now)
            event.wait(pause)
            event.clear()
    finally:
        readers.unregister(job_id, event)
