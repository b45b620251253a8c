"""The ``igsend.send_chunk`` task: several jobs of one account's send class, one Celery task (igsend.core.chunks).

Per chunk: the jobs' documents in one round trip, their admission in one script call (lua/admit_chunk.lua; each
job still gets its GCRA slot, its lock and its in-flight mark, atomically), one POST per job on this process's
POST threads, and the delivered records in pipelined calls of lua/finish.lua as the answers arrive. A job that is
not plain (ordered, scheduled, retried, uploads, a closed window, an account held or paused, no record) goes through
``igsend.send_message``'s own path, in this task. What Celery costs per task (fetch, unacked bookkeeping, the three
task events, the ack) is paid once per chunk.

A worker killed mid-chunk: the chunk comes back (acks_late, the visibility timeout); its delivered jobs are skipped,
its admitted ones found in flight end as a redelivered ``igsend.send_message`` would (reconciled), the others are
admitted and sent. Nothing is admitted before a POST thread is free for it, so what a kill leaves in flight is what
was being POSTed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore
from celery.worker import state as worker_state

from igsend.core import inbound, records, tracing
from igsend.core.chunks import CHUNK_TASK_NAME, Chunk
from igsend.core.chunks import publish as publish_chunk
from igsend.core.store import (
    DELAYED_KEY,
    INFLIGHT_KEY,
    PENDING_KEY,
    account_key,
    done_key,
    job_key,
    limiter_key,
    lock_key,
)
from workers.accounts import Account, AccountError, get_account
from workers.breaker import reset_keys
from workers.errors import Outcome
from workers.metrics import FINISHED, RATE_WAITS
from workers.tasks import (
    DeadLettered,
    _conclude,
    _Context,
    _delivered_result,
    _log_attempt,
    _post,
    _Posted,
    _record_delivered,
    _send,
    app,
    context,
)

log = logging.getLogger("igsend.send")


class _Lanes:
    """This process's POST threads and the permits that bound what is admitted and not yet answered. Chunks take
    permits in the order they arrived (the order the dispatcher handed them out, fairly across accounts): only the
    oldest chunk still admitting takes any, so a chunk that arrived later never overtakes it."""

    def __init__(self, size: int):
        self.size = size
        self.free = size
        self.lock = threading.Lock()
        self.waiting: deque[tuple[object, threading.Condition]] = deque()  # chunks admitting, oldest first
        #: free permits the oldest chunk waits for: a permit given back wakes it only once there are that many
        #: (gathering 16 would otherwise wake it 15 times for nothing, a thread switch each)
        self.awaited = 1
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="igsend-post")

    def join(self) -> object:
        token = object()
        with self.lock:
            self.waiting.append((token, threading.Condition(self.lock)))
        return token

    def leave(self, token: object) -> None:
        with self.lock:
            for index, (entry, _) in enumerate(self.waiting):
                if entry is token:
                    del self.waiting[index]
                    if index == 0:
                        self.awaited = 1  # what the next chunk waits for first
                    break
            self._wake()

    def take(self, token: object, wanted: int, enough: int, timeout: float | None) -> int:
        """Permits for chunk ``token``, up to ``wanted``, once it is the oldest chunk admitting and one is free
        (within ``timeout`` seconds; None: however long); it waits up to ADMIT_GATHER more for ``enough``."""
        with self.lock:
            condition = next(c for entry, c in self.waiting if entry is token)
            until = None if timeout is None else time.monotonic() + timeout
            while not (self.waiting[0][0] is token and self.free > 0):
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    return 0
                condition.wait(left)
            gather_until = time.monotonic() + ADMIT_GATHER
            self.awaited = min(enough, wanted)
            while self.free < self.awaited and (left := gather_until - time.monotonic()) > 0:
                condition.wait(left)
            self.awaited = 1
            taken = min(wanted, self.free)
            self.free -= taken
            return taken

    def give(self, count: int = 1) -> None:
        if count:
            with self.lock:
                self.free += count
                self._wake()

    def _wake(self) -> None:
        if self.waiting and self.free >= self.awaited:
            self.waiting[0][1].notify()


_posts: _Lanes | None = None
_posts_lock = threading.Lock()


def posts() -> _Lanes:
    global _posts
    if _posts is None:
        with _posts_lock:
            if _posts is None:
                _posts = _Lanes(max(1, int(app.conf.worker_concurrency or 10)))
    return _posts


@app.task(name=CHUNK_TASK_NAME, bind=True)
def send_chunk(self: Task[..., Any], account: str, send_class: str, count: int, jobs: list[str] | None = None
               ) -> dict[str, Any]:
    """Deliver a chunk's jobs. Arguments: the account's name, the send class and how many jobs (what Flower shows);
    ``jobs``: their ids. Returns the counts of what became of them."""
    done = deliver(context(), account, send_class, list(jobs or []))
    return {"account": account, "send_class": send_class, "count": count, **done}


#: Admission waits for this many free POST threads (or the chunk's last jobs, or none of its POSTs in flight) so
#: that one script call admits several jobs: its fixed part (the account, the limiter, the indexes) is shared.
ADMIT_BATCH = 16
#: Seconds a chunk with nothing in flight waits for that many (at 500 POSTs/s, 16 threads free in 30 ms).
ADMIT_GATHER = 0.02
#: Seconds admission keeps trying through a Redis that is away (a restart, a failover) before the chunk fails
#: (its jobs not admitted then come back through the lost-message sweeper).
ADMIT_PATIENCE = 30.0


def deliver(ctx: _Context, account_name: str, send_class: str, job_ids: list[str]) -> dict[str, int]:
    counts = {"delivered": 0, "other": 0}
    if not job_ids:
        return counts
    try:
        account: Account | None = get_account(account_name)
    except AccountError:
        account = None
    lanes = posts()
    futures: dict[Future[Any], tuple[str, Any]] = {}
    # The POST threads hand their finished futures to this thread, which records and logs them in batches: one
    # writer of the log handler instead of 64 POST threads queueing for its lock, and no waiter added to every
    # future in flight each time one finishes (concurrent.futures.wait).
    finished_queue: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    # the per-POST line is written here, unless tracing is on: then inside the POST's span, for its trace id
    log_here = not tracing.on()

    def submit(kind: str, what: Any, fn: Any, *args: Any) -> None:
        future = lanes.pool.submit(fn, *args)
        futures[future] = (kind, what)
        future.add_done_callback(finished_queue.put)

    token = lanes.join()
    if account is None or ctx.admitter.replica_acks:
        # the whole path of igsend.send_message for each job: it dead-letters an unknown account's, and waits for
        # the replicas to hold each admission
        pipe = ctx.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(job_key(job_id), "message")
        for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
            lanes.take(token, 1, 1, None)
            submit("single", job_id, _single, ctx, lanes, job_id, json.loads(raw) if raw else None)
        job_ids = []
    position, forget = 0, True
    try:
        while position < len(job_ids) or futures:
            if position < len(job_ids) and _stopping():
                # a warm shutdown (SIGTERM: a scale-down, a rollout): finish the POSTs under way, hand the jobs not
                # admitted back to the queue as a chunk of their own, for another worker
                _hand_back(account_name, send_class, job_ids[position:])
                counts["handed_back"] = len(job_ids) - position
                position = len(job_ids)
            if position < len(job_ids):
                wanted = len(job_ids) - position
                enough = max(1, min(ADMIT_BATCH, lanes.size // 4))
                held = lanes.take(token, wanted, enough, 0.02 if futures else None)
                if held and _stopping():
                    lanes.give(held)
                    continue  # asked to stop while waiting for threads: hand back what is not admitted
                if held:
                    batch = job_ids[position:position + held]
                    position += held
                    assert account is not None
                    try:
                        answers = _admit(ctx, account, send_class, batch)
                    except BaseException:
                        lanes.give(held)
                        raise
                    for job_id, msg, go in answers:
                        if go is None:
                            lanes.give()
                            counts["other"] += 1
                            continue
                        if go is SINGLE:
                            submit("single", job_id, _single, ctx, lanes, job_id, msg)
                            continue
                        submit("plain", (job_id, msg, go), _send_admitted, ctx, lanes, job_id, msg, account,
                               send_class, go)
            if position >= len(job_ids):
                lanes.leave(token)  # the next chunk may admit
            if not futures:
                continue
            finished = _finished(finished_queue, block=position >= len(job_ids))
            delivered: list[tuple[str, dict[str, Any], tuple[float, int, float], _Posted]] = []
            for future in finished:
                kind, what = futures.pop(future)
                if kind == "single":
                    counts["delivered" if future.result() else "other"] += 1
                    continue
                job_id, msg, go = what
                posted: _Posted = future.result()
                if log_here:
                    _log_attempt(ctx, job_id, msg, go[1], posted.verdict, posted.latency)
                if posted.verdict.outcome is Outcome.DELIVERED:
                    delivered.append((job_id, msg, go, posted))
                else:
                    counts["other"] += 1
                    _finish_other(ctx, job_id, msg, account, send_class, go, posted)
            if delivered:
                # a delivery resets the account's circuit breaker (workers/breaker.py): once a chunk is enough
                _record_many(ctx, account_name, delivered, forget=forget)
                forget = False
                counts["delivered"] += len(delivered)
    finally:
        lanes.leave(token)
        if futures:  # admission failed (Redis away too long): the POSTs under way still get their outcomes
            for future in futures:
                future.result()
    return counts


def _finished(finished_queue: queue.SimpleQueue[Future[Any]], *, block: bool) -> list[Future[Any]]:
    """The futures finished so far (waiting for one with ``block``)."""
    try:
        finished = [finished_queue.get(block=block)]
    except queue.Empty:
        return []
    while True:
        try:
            finished.append(finished_queue.get_nowait())
        except queue.Empty:
            return finished


def _stopping() -> bool:
    """Whether the worker was asked to stop (Celery's warm shutdown sets this; a cold one kills the process)."""
    stop = worker_state.should_stop
    return stop is not None and stop is not False  # as Celery reads it: the exit code, 0 included


def _hand_back(account: str, send_class: str, job_ids: list[str]) -> None:
    """Publish ``job_ids`` again as one chunk; they stay in the pending index meanwhile, so should this publish
    fail, the lost-message sweeper sends them."""
    with app.producer_or_acquire() as producer:
        publish_chunk(app, producer, Chunk(account, send_class, job_ids))
    log.info("worker stopping: %d job(s) of %s|%s handed back to the queue", len(job_ids), account, send_class)


#: What :func:`_admit` answers for a job that is not plain: it goes through ``igsend.send_message``'s path.
SINGLE = (0.0, 0, 0.0)


def _admit(ctx: _Context, account: Account, send_class: str, batch: list[str]) -> list[tuple[str, Any, Any]]:
    """lua/admit_chunk.lua for ``batch``: each job with its message and (wait, attempt, created_at) to POST, None
    (parked), or SINGLE (not plain: for the single path)."""
    keys = [PENDING_KEY, INFLIGHT_KEY, DELAYED_KEY, account_key(account.name), limiter_key(account.name, send_class)]
    lock_ttl_ms = int(ctx.settings.lock_ttl(send_class) * 1000)
    args: list[Any] = [lock_ttl_ms, account.rate(send_class), ctx.admitter.max_inline_wait, account.name,
                       "1" if account.login == "facebook" else "0", inbound.last_wrote_key("", "")[:-2],
                       inbound.comment_key("", "")[:-2], inbound.WINDOW_SECONDS, inbound.PRIVATE_REPLY_SECONDS]
    for job_id in batch:
        keys += [job_key(job_id), lock_key(job_id)]
    args += batch
    give_up_at = time.monotonic() + ADMIT_PATIENCE
    while True:
        try:
            reply = _admit_script(ctx)(keys=keys, args=args)
            break
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            if time.monotonic() > give_up_at:
                raise
            time.sleep(0.5)
    answers: list[tuple[str, Any, Any]] = []
    for index, job_id in enumerate(batch):
        action, first, second, third, raw = reply[5 * index:5 * index + 5]
        msg = json.loads(raw) if raw else None
        if action == "go" and msg is not None:
            msg.pop("idempotency_key", None)
            answers.append((job_id, msg, (float(first), int(second), float(third))))
            continue
        if action == "parked":
            RATE_WAITS.labels(account.name, "parked").inc()
            answers.append((job_id, msg or {}, None))
        else:  # admit.lua decides, with everything it knows: the whole single path, on a POST thread
            answers.append((job_id, msg, SINGLE))
    return answers


_scripts: dict[int, Any] = {}


def _admit_script(ctx: _Context) -> Any:
    found = _scripts.get(id(ctx.redis))
    if found is None:
        found = _scripts[id(ctx.redis)] = records.script(ctx.redis, "admit_chunk")
    return found


def _send_admitted(ctx: _Context, lanes: _Lanes, job_id: str, msg: dict[str, Any], account: Account,
                   send_class: str, go: tuple[float, int, float]) -> _Posted:
    try:
        if not tracing.on():  # deliver() writes its line, on the chunk's thread
            return _post(ctx, job_id, msg, account, send_class, go[1], go[0], log=False)
        # the job's own trace (its record keeps the producer's traceparent): its wait, and the POST of this run
        parent = ctx.redis.hget(job_key(job_id), "traceparent")
        attributes = {"igsend.job_id": job_id, "igsend.account": account.name, "igsend.kind": str(msg.get("kind")),
                      "igsend.attempt": go[1], "igsend.admitted_in_chunk": True}
        with tracing.span("igsend.send", parent=str(parent) if parent else None, attributes=attributes) as current:
            tracing.waited("igsend.wait", go[2], time.time(), **{"igsend.waited_for": "the queue"})
            posted = _post(ctx, job_id, msg, account, send_class, go[1], go[0])
            current.set_attribute("igsend.outcome", posted.verdict.outcome.value)
            return posted
    finally:
        lanes.give()


def _single(ctx: _Context, lanes: _Lanes | None, job_id: str, msg: Any) -> bool:
    """One job through ``igsend.send_message``'s path (lua/admit.lua decides). True when it was delivered."""
    try:
        if msg is None:  # no record: delivered already (compacted), or expired
            ctx.redis.zrem(PENDING_KEY, job_id)
            if ctx.redis.exists(done_key(job_id)):
                ctx.outcomes.count("skipped_redeliveries_total")
            return False
        _send(ctx, job_id, msg)
        return True
    except (Ignore, DeadLettered):
        return False
    except Exception:  # one job's trouble is not the chunk's: its record and the sweeper bring it back
        log.exception("job=%s failed in its chunk", job_id)
        return False
    finally:
        if lanes is not None:
            lanes.give()


def _finish_other(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account | None, send_class: str,
                  go: tuple[float, int, float], posted: _Posted) -> None:
    assert account is not None
    try:
        _conclude(ctx, job_id, msg, account, send_class, go[1], go[2], posted)
    except (Ignore, DeadLettered):
        pass
    except Exception:
        log.exception("job=%s: recording its outcome failed", job_id)


def _record_many(ctx: _Context, account: str,
                 delivered: list[tuple[str, dict[str, Any], tuple[float, int, float], _Posted]], *,
                 forget: bool) -> None:
    """The delivered records of several answers, in one pipeline of lua/finish.lua calls (with ``forget``, the
    account's circuit breaker reset with the last); one by one, with their patience, if that fails."""
    items = [(job_id, _delivered_result(msg, posted.body), posted.entry) for job_id, msg, _, posted in delivered]
    keys = reset_keys(account) if forget else []
    try:
        ctx.outcomes.delivered_many(items, account=account, forget=keys)
    except (records.NotReplicated, redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
        for job_id, result, entry in items:
            _record_delivered(ctx, job_id, result, entry, forget=keys, account=account)
    for _, msg, _, _ in delivered:
        FINISHED.labels(account, msg["kind"], "delivered").inc()


__all__ = ["deliver", "send_chunk"]
