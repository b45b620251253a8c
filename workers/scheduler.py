"""Moves due jobs from ``igsend:delayed`` back onto the Celery queue, and new ones from the accounts' lanes.

Why not Celery's countdown/ETA: with the Redis transport an ETA message sits unacknowledged in the worker and
is redelivered every visibility timeout (redis.rst "Caveats"; kombu#337), and it holds a prefetch slot. So
delayed jobs wait in a sorted set instead, and one mover (elected with a Redis lease, in whichever worker
holds it) publishes them when due.

A due id is moved atomically into ``igsend:moving`` before it is published and removed after; a mover that
dies in between leaves it there, and the next leader publishes it again. The worker's admission step makes
such a second copy harmless.

The same leader is the dispatcher of new messages (igsend.core.lanes): each tick it tops the Celery queue up to
``ahead`` messages from the lanes, fairly across accounts and at each account's budget, through the same moving
list. A scheduled job that comes due joins its account's lane too (lua/lane_due.lua), so a campaign scheduled for
one moment takes its turn like any backlog; retries, booked rate slots and ordered jobs go to the due list.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from typing import cast

import redis

from igsend.core import chunks, lanes, records, series
from igsend.core.celery_app import DUE_PRIORITY, NEW_PRIORITY, get_app, publish
from igsend.core.settings import get_settings
from igsend.core.store import DELAYED_KEY, PENDING_KEY, PREFIX, get_redis, job_key
from schemas import SEND_CLASS
from workers.sweeper import MOVING_KEY, Sweeper

log = logging.getLogger("igsend.scheduler")

LEADER_KEY = f"{PREFIX}scheduler:leader"
#: Jobs a lane takes at least per turn when several lanes share the dispatcher's room (at most a chunk): turns of
#: one or two jobs would make a Celery task of each, with a hundred busy accounts.
SHARED_STEP = 10


# KEYS: the lease. ARGV: me, ttl_ms. Take or keep the lease; returns 1 when this process holds it. Shared by the
# scheduler's leader and the callbacks' sender (workers/callbacks.py).
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class Scheduler:
    """One background thread per worker process; only the lease holder moves jobs."""

    def __init__(self, client: redis.Redis | None = None, *, interval: float = 0.02, batch: int = 500,
                 lease: float = 3.0, sweep_every: float = 5.0, lost_after: float | None = None,
                 ahead: int | None = None, chunk: int | None = None,
                 budgets: Mapping[tuple[str, str], float] | None = None):
        self.client = client or get_redis()
        self.sweeper = Sweeper(self.client, lost_after=lost_after or get_settings().lost_after)
        self.sweep_every = sweep_every
        self._last_sweep = -math.inf  # never: the first tick sweeps
        self._charted_minute = 0.0  # pragma: no mutate (no tick runs in 1970's first minutes: the first one charts)
        self.interval = interval
        self.batch = batch
        self.lease_ms = int(lease * 1000)
        self.me = uuid.uuid4().hex
        self.claim = records.script(self.client, "claim_due")
        self.lane_due = records.script(self.client, "lane_due")
        self.claim_fair = records.script(self.client, "claim_fair")
        #: How many messages the dispatcher keeps on the Celery queue: enough for the workers' next moment, few
        #: enough that a new account's reply is never far behind (IGSEND_DISPATCH_AHEAD).
        self.ahead = ahead or get_settings().dispatch_ahead
        #: At most this many of one lane's messages go out as one Celery task (IGSEND_CHUNK)
        self.chunk = chunk or get_settings().chunk
        #: (account, send class) -> messages/s of the accounts this process serves, recorded for the dispatcher
        #: again every sweep interval (after a Redis restart, a flush, or a change of the accounts file)
        self.budgets = dict(budgets or {})
        self._last_budgets = -math.inf  # never: the first tick records them
        self.lead = self.client.register_script(LEASE_SCRIPT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leading = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="igsend-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # pragma: no mutate (its loop ends within a tick once _stop is set)
        if self._leading:
            try:
                self.client.delete(LEADER_KEY)
            except redis.RedisError:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.tick()
            except Exception:  # keep moving after a Redis restart or a broker hiccup
                log.exception("scheduler tick failed; retrying")
                moved = 0  # pragma: no mutate (only whether the loop waits self.interval more, after its 1 s)
                self._stop.wait(1.0)
            if not moved:
                self._stop.wait(self.interval)

    def tick(self) -> int:
        """Publish what is due (and what a dead leader left half-moved). Returns how many were published."""
        if self.budgets and time.monotonic() - self._last_budgets >= self.sweep_every:
            self._last_budgets = time.monotonic()
            lanes.set_rates(self.client, self.budgets)
        leading = bool(self.lead(keys=[LEADER_KEY], args=[self.me, self.lease_ms]))
        if leading and not self._leading:
            self._republish(cast(list[str], self.client.lrange(MOVING_KEY, 0, -1)))  # left by a previous leader
        self._leading = leading
        if not leading:
            return 0
        ids = self.claim(keys=[DELAYED_KEY, MOVING_KEY, PENDING_KEY], args=[self.batch])
        due = self._into_lanes(ids)  # the scheduled ones among them join their lanes, to be dispatched below
        self._republish(due)
        dispatched = self.dispatch()
        if time.monotonic() - self._last_sweep >= self.sweep_every:
            self._last_sweep = time.monotonic()
            self.sweeper.sweep()  # messages the broker lost, and moves a crash left half done
        if time.time() // 60 != self._charted_minute:  # the console's charts: what waits, once a minute
            self._charted_minute = time.time() // 60
            series.set_waiting(self.client, {account: sum(classes.values())
                                             for account, classes in lanes.waiting(self.client).items()}, time.time())
        return len(due) + dispatched

    def dispatch(self) -> int:
        """Hand out up to ``ahead`` messages from the lanes (lua/claim_fair.lua), a lane's share at a time as one
        ``igsend.send_chunk`` task (igsend.core.chunks). Returns how many messages.

        What counts against ``ahead`` is what was handed out and not yet reached a worker's admission (the
        ``igsend:pending`` index): Celery's queue counts chunks, not messages, and a worker's prefetched chunks
        must count too, or one process could hold thousands of one account's messages."""
        room = self.ahead - int(self.client.zcard(PENDING_KEY))
        if room < min(self.chunk, self.ahead):
            # wait for a chunk's worth of room: handing out a few at a time would make chunks of a few, each a
            # Celery task and a dispatcher step (at 500 messages/s a chunk's room frees in a tenth of a second)
            return 0
        reply = self.claim_fair(keys=lanes.claim_keys(job_key(""), MOVING_KEY, PENDING_KEY),
                                args=[min(room, self.batch), 1000, 4 * min(room, self.batch) + 100, lanes.LEAD,
                                      self.chunk, SHARED_STEP])
        handed = chunks.split(reply, self.chunk)
        if not handed:
            return 0
        if get_settings().replica_acks:
            # IGSEND_REDIS_REPLICA_ACKS: one igsend.send_message per job, as before chunks. A producer whose write
            # the replicas did not confirm takes back its jobs still on the queue by their messages (producers/
            # enqueue.py); a failover test (tests/test_failover.py) showed jobs in a chunk escaping that and sent
            # twice with the caller's retry, a case not yet understood.
            self._republish([job_id for chunk in handed for job_id in chunk.job_ids], priority=NEW_PRIORITY)
            return sum(len(chunk.job_ids) for chunk in handed)
        app = get_app()
        with app.producer_or_acquire() as producer:
            for chunk in handed:
                chunks.publish(app, producer, chunk)
        chunks.unmove(self.client, MOVING_KEY, [job_id for chunk in handed for job_id in chunk.job_ids])
        return sum(len(chunk.job_ids) for chunk in handed)

    def _into_lanes(self, ids: list[str]) -> list[str]:
        """Move the scheduled jobs among the due ``ids`` to their accounts' lanes (lua/lane_due.lua), so
        a campaign that comes due at once takes its turn with the other accounts' messages. Returns the ids left to
        publish to the due list: retries, booked rate slots, ordered jobs, expired records."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "account", "kind")
        keys = [MOVING_KEY, PENDING_KEY, lanes.READY_KEY, lanes.PACED_KEY, lanes.CLOCK_KEY]
        candidates = []
        for job_id, (account, kind) in zip(ids, pipe.execute(), strict=True):
            if account and kind in SEND_CLASS:
                keys += [job_key(job_id), lanes.lane_key(account, SEND_CLASS[kind])]
                candidates.append(job_id)
        if not candidates:
            return ids
        moved = set(self.lane_due(keys=keys, args=candidates))
        return [job_id for job_id in ids if job_id not in moved]

    def _republish(self, ids: list[str], *, priority: int = DUE_PRIORITY) -> None:
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(job_key(job_id), "message")
        messages = pipe.execute()
        app = get_app()
        with app.producer_or_acquire() as producer:
            for job_id, raw in zip(ids, messages, strict=True):
                if raw:  # a record that expired has nothing left to send
                    publish(app, producer, job_id, json.loads(raw), priority=priority)
        chunks.unmove(self.client, MOVING_KEY, ids)  # one entry each, as dispatch() takes its chunks' ids off

