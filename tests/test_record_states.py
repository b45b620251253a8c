"""The job record's state machine, explored (issue 39, item 2).

A Hypothesis ``RuleBasedStateMachine`` drives the real records and their Lua scripts (igsend/core/lua/) against a
real Redis through random interleavings of what producers, the dispatcher, workers, operators and faults do to a
job, and after every step holds Redis to a model of what each job must be:

- **rules**: create (``producers.send_text``: plain, ``ordered=True``, ``send_at`` an hour ahead), the
  dispatcher (``Scheduler.dispatch``) and the scheduler's tick (due jobs, the lanes), a worker taking the next copy
  off the Celery queue and admitting it (a chunk's jobs together, ``lua/admit_chunk.lua`` as ``igsend.send_chunk``
  does, or each through ``Admitter.admit``), a stale copy admitted again (redelivery), the
  POST answered (``Outcomes.delivered``), refused (``Outcomes.dead``), transient (``Outcomes.retry``, due now or
  in an hour), a worker lost mid-POST (its lock gone, its in-flight entry left), a lock that expires under a
  live worker (which records its outcome late, also after its attempt was classified lost), an orphaned attempt
  resent (``forget_inflight``) or dead-lettered as ``unknown``, cancel (``records.cancel`` and ``Job.cancel``),
  replay from the DLQ (``dlq.replay``), the sweeper (``Sweeper(lost_after=0)``), time passing for one waiting job,
  and a Redis restart (SHUTDOWN, the AOF flushed, and the same server started again on its port: connections
  drop, the script cache empties).
- **invariants**: admission answers what the model expects, and in particular GO (a POST) only for a job that
  is not final and has no attempt in flight: a job is POSTed again only after its earlier attempt ended with a
  recorded retry or was classified lost (ORPHANED, then resent); a final state changes only by replay; an ordered
  job is due exactly when the last of its predecessors ends (never in a lane, the delayed set or the queue before,
  always there after); the indexes agree with the records (``igsend:inflight`` holds only jobs sending, and every
  job with an attempt in flight is in it or in ``igsend:pending``; ``igsend:delayed`` only scheduled/retrying
  jobs and released ordered ones; the DLQ index and hash exactly the dead/unknown jobs; each lane holds a waiting
  job once); and no job that is owed a send is in no index at all (it would wait forever).

The test runs the machine on a redis-server it starts itself (a real restart needs a server of its own; the
session's Redis is shared, and Redis 7 refuses ``DEBUG RELOAD`` unless started with ``enable-debug-command``), on
database 12, flushed per example. ``python ops/fuzz_records.py --examples N`` runs the same machine longer.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

DB = 12
#: Jobs per example at most: enough for two ordered conversations of three and some plain ones.
MAX_JOBS = 8
RATE = 1_000_000.0  # admission never parks a job for its rate slot here (rates are tests/test_admission.py's)
LATER = 3600.0  # a send_at, or a retry's backoff, that does not come by itself during an example
FINAL = frozenset({"delivered", "dead", "unknown", "cancelled"})
CANCELLABLE = frozenset({"queued", "scheduled", "retrying"})
#: Statuses a job may have while its id waits in igsend:delayed.
DELAYABLE = frozenset({"scheduled", "retrying", "queued"})
#: The account a chunk's jobs are admitted for (producers' default account; Instagram Login): what
#: workers.chunked._admit reads of a workers.accounts.Account.
CHUNK_ACCOUNT: Any = SimpleNamespace(name="default", login="instagram", rate=lambda send_class: RATE)


class Server:
    """A redis-server of the test's own (AOF on), which can be restarted on the same port and data directory."""

    def __init__(self, directory: Path):
        from igsend.local.embedded_redis import start_redis

        self.directory = directory
        # A password of its own: should another process take the port while the server restarts, nothing here
        # can reach (and flush) that one.
        self.password = secrets.token_hex(16)
        self.embedded = start_redis(directory, password=self.password)
        self.port = int(self.embedded.url.rsplit(":", 1)[1].split("/")[0])
        self.restarts = 0

    def url(self, db: int = DB) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def restart(self) -> None:
        from igsend.local.embedded_redis import start_redis

        self.embedded.stop()  # SHUTDOWN: the AOF is written and fsynced first
        self.embedded = start_redis(self.directory, port=self.port, password=self.password)
        probe = redis_lib.Redis.from_url(self.url())
        deadline = time.monotonic() + 30
        while True:  # PING answers while the AOF is still loading; other commands answer LOADING until it is done
            try:
                probe.dbsize()
                break
            except redis_lib.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        probe.close()
        self.restarts += 1

    def stop(self) -> None:
        self.embedded.stop()


@dataclass
class Job:
    """What the model knows of one job."""

    id: str
    message: dict[str, Any]
    seq: int
    status: str
    conversation: str | None = None  # the recipient of an ordered job
    due: float | None = None  # scheduled or retrying: when it may go
    in_conversation: bool = False  # still in its ordered conversation's set (not yet done with)
    inflight: bool = False  # an attempt admitted (GO) whose outcome is not recorded
    posts: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class Worker:
    """A worker holding one attempt of a job: ``alive`` with its lock, ``slow`` (alive, its lock expired),
    ``superseded`` (slow, and admission has since classified its attempt lost) or ``dead`` (killed mid-POST)."""

    job: Job
    attempt: int
    state: str = "alive"


def record_machine(server: Server) -> type[RuleBasedStateMachine]:
    """The state machine class, bound to ``server`` (whose database DB the environment already names)."""

    import producers
    from igsend.core import dlq, records
    from igsend.core.celery_app import queue_keys
    from igsend.core.errors import CancelRefused
    from igsend.core.lanes import LANE_PREFIX
    from igsend.core.records import JobStatus, Outcomes
    from igsend.core.store import (
        DELAYED_KEY,
        DLQ_INDEX_KEY,
        DLQ_KEY,
        INFLIGHT_KEY,
        PENDING_KEY,
        get_redis,
        job_key,
        lock_key,
    )
    from workers import chunked
    from workers.admission import Action, Admitter
    from workers.scheduler import Scheduler
    from workers.sweeper import MOVING_KEY, Sweeper

    class RecordStates(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.r = redis_lib.Redis.from_url(server.url(), decode_responses=True)
            self.r.flushdb()
            self.client = get_redis()
            self.admitter = Admitter(self.client, lock_ttl=30.0)
            # what workers.chunked._admit reads of a worker's context: its Redis, settings and admitter
            self.chunk_context = SimpleNamespace(redis=self.client, admitter=self.admitter,
                                                 settings=SimpleNamespace(lock_ttl=lambda send_class: 30.0))
            self.outcomes = Outcomes(self.client, record_ttl=7 * 24 * 3600)
            self.scheduler = Scheduler(self.client, lost_after=60.0)
            self.jobs: list[Job] = []
            self.workers: list[Worker] = []
            self.seen: list[Job] = []  # jobs a copy of which reached a worker once: what can be redelivered
            self.message_ids = 0
            self.restarts = 0

        # --- helpers -----------------------------------------------------------------------------------------

        def now(self) -> float:
            seconds, micros = cast(tuple[int, int], self.r.time())
            return seconds + micros / 1_000_000

        def by_id(self, job_id: str) -> Job | None:
            return next((job for job in self.jobs if job.id == job_id), None)

        def note(self, job: Job, what: str) -> None:
            job.history.append(what)

        def predecessors_alive(self, job: Job) -> list[Job]:
            """The earlier jobs of ``job``'s ordered conversation not yet done with (``job`` must wait for them)."""
            if not job.in_conversation:
                return []
            return [other for other in self.jobs if other.conversation == job.conversation
                    and other.in_conversation and other.seq < job.seq]

        def lock_held(self, job: Job) -> bool:
            return any(w.job is job and w.state == "alive" for w in self.workers)

        def expected_admission(self, job: Job, now: float) -> Action:
            if job.status in FINAL:
                return Action.DONE
            if self.lock_held(job):
                return Action.BUSY
            if job.inflight:
                return Action.ORPHANED
            if job.status in ("retrying", "scheduled") and job.due is not None and job.due > now + 0.5:
                return Action.EARLY
            if self.predecessors_alive(job):
                return Action.WAITING
            return Action.GO

        def end_in_conversation(self, job: Job) -> None:
            job.in_conversation = False

        def admit(self, job: Job, *, resend_orphans: bool) -> None:
            expected = self.expected_admission(job, self.now())
            admission = self.admitter.admit(job.id, job.message, "text", RATE, lock_ttl=30.0)
            assert admission.action is expected, (
                f"job {job.id} ({job.status}, history {job.history}): admission said {admission.action} "
                f"({admission.detail}), the model expected {expected}")
            self.note(job, f"admit:{admission.action.value}")
            if admission.action is Action.GO:
                self.went(job, admission.attempt)
            elif admission.action is Action.WAITING:
                heads = {other.id for other in self.predecessors_alive(job)}
                assert admission.detail in heads, (admission.detail, heads)
            elif admission.action is Action.ORPHANED:
                # the worker that held the attempt is gone or late: its attempt is classified lost, now
                for worker in self.workers:
                    if worker.job is job and worker.state == "slow":
                        worker.state = "superseded"  # alive: it may still record what its POST came to
                self.workers = [w for w in self.workers if w.job is not job or w.state == "superseded"]
                job.inflight = False
                if resend_orphans:  # IGSEND_UNKNOWN_OUTCOME=resend, as workers.tasks does it
                    self.outcomes.forget_inflight(job.id)
                    self.note(job, "orphan:resend")
                    self.admit(job, resend_orphans=resend_orphans)
                else:  # dead-letter: unknown, in the DLQ
                    self.outcomes.dead(job.id, "outcome unknown: a worker stopped while its POST was in flight",
                                       None, None, status=JobStatus.UNKNOWN,
                                       conversation=records.conversation_of(job.message))
                    job.status = "unknown"
                    self.end_in_conversation(job)
                    self.note(job, "orphan:unknown")

        def went(self, job: Job, attempt: int) -> None:
            """Admission said GO: the job's attempt ``attempt`` is in flight, held by a live worker."""
            assert not job.inflight and job.status not in FINAL  # as expected_admission says; spelled out
            job.inflight, job.status, job.due = True, "sending", None
            job.posts += 1
            self.workers.append(Worker(job, attempt))

        def admit_chunk(self, jobs: list[Job], *, resend_orphans: bool) -> None:
            """A chunk's jobs admitted together as workers.chunked does (lua/admit_chunk.lua); a job it leaves to
            the single path goes through :meth:`admit` (lua/admit.lua) right after."""
            now = self.now()
            answers = chunked._admit(self.chunk_context, CHUNK_ACCOUNT, "text", [job.id for job in jobs])
            for job, (job_id, _, go) in zip(jobs, answers, strict=True):
                assert job_id == job.id and go is not None, (job_id, go)  # never parked: RATE is unbounded
                expected = self.expected_admission(job, now)
                # never admitted before, not ordered: what the chunk's script exists to send
                fresh = job.conversation is None and set(job.history) <= {"created", "due:lane"}
                if go == chunked.SINGLE:
                    assert not (fresh and expected is Action.GO), (
                        f"job {job.id} ({job.status}, history {job.history}): a fresh job left to the single path")
                    self.note(job, "chunk:single")
                    self.admit(job, resend_orphans=resend_orphans)
                    continue
                assert expected is Action.GO and job.status == "queued" and job.conversation is None, (
                    f"job {job.id} ({job.status}, history {job.history}): the chunk admitted it to send, "
                    f"the model expected {expected}")
                self.note(job, "chunk:go")
                self.went(job, go[1])

        def record(self, worker: Worker, outcome: str) -> None:
            """The worker records what its POST came to, as workers.tasks does."""
            job = worker.job
            entry = {"attempt": worker.attempt, "at": time.time(), "latency_ms": 1.0, "outcome": outcome}
            conversation = records.conversation_of(job.message)
            if outcome == "delivered":
                self.message_ids += 1
                self.outcomes.delivered(job.id, {"recipient_id": job.message["recipient"],
                                                 "message_id": f"m_fake{self.message_ids}"},
                                        entry, conversation=conversation, account=job.message["account"])
                job.status = "delivered"
                self.end_in_conversation(job)
            elif outcome == "dead":
                self.outcomes.dead(job.id, "permanent: refused", {"code": 551, "class": "permanent"}, entry,
                                   conversation=conversation)
                job.status = "dead"
                self.end_in_conversation(job)
            else:
                due = self.now() + (LATER if outcome == "retry_later" else -1.0)
                self.outcomes.retry(job.id, due, reason="transient", error={"code": 2, "class": "transient"},
                                    attempt_entry=entry)
                job.status, job.due = "retrying", due
            job.inflight = False
            self.workers.remove(worker)
            self.note(job, f"recorded:{outcome}")

        def pick(self, items: list[Any], index: int) -> Any:
            return items[index % len(items)]

        # --- rules -------------------------------------------------------------------------------------------

        @precondition(lambda self: len(self.jobs) < MAX_JOBS)
        @rule(ordered=st.booleans(), scheduled=st.booleans(), who=st.integers(0, 1))
        def create(self, ordered: bool, scheduled: bool, who: int) -> None:
            recipient = f"conv{who}" if ordered else f"plain{len(self.jobs)}"
            send_at = time.time() + LATER if scheduled else None
            handle = producers.send_text(recipient, f"message {len(self.jobs)}", ordered=ordered or None,
                                         send_at=send_at)
            message = json.loads(cast(str, self.r.hget(job_key(handle.id), "message")))
            job = Job(handle.id, message, len(self.jobs), "scheduled" if scheduled else "queued",
                      conversation=recipient if ordered else None, in_conversation=ordered)
            if scheduled:
                job.due = float(cast(str, self.r.hget(job_key(handle.id), "next_attempt_at")))
            self.jobs.append(job)
            self.note(job, "created")

        @rule()
        def dispatch(self) -> None:
            self.scheduler.dispatch()

        @rule()
        def tick(self) -> None:
            before = self.now()
            self.scheduler.tick()
            for job in self.jobs:
                # a scheduled job that came due goes to its account's lane, queued (lua/lane_due.lua); an
                # ordered one keeps waiting for its predecessor, or goes to the due list when it is the head
                if job.status == "scheduled" and job.due is not None and job.due <= before \
                        and job.conversation is None:
                    job.status, job.due = "queued", None
                    self.note(job, "due:lane")

        @rule(resend_orphans=st.booleans(), together=st.booleans())
        def take(self, resend_orphans: bool, together: bool) -> None:
            """A worker takes the next copy off the Celery queue (kombu pops the right end) and admits it: a
            chunk's jobs ``together`` (lua/admit_chunk.lua, as igsend.send_chunk does) or one after another (as
            a stale copy's single path does)."""
            for key in queue_keys():
                raw = self.r.rpop(key)
                if raw:
                    jobs = []
                    for job_id in jobs_of(cast(str, raw)):
                        job = self.by_id(job_id)
                        assert job is not None, raw
                        if job not in self.seen:
                            self.seen.append(job)
                        jobs.append(job)
                    if together:
                        self.admit_chunk(jobs, resend_orphans=resend_orphans)
                    else:
                        for job in jobs:
                            self.admit(job, resend_orphans=resend_orphans)
                    return

        @precondition(lambda self: self.seen)
        @rule(index=st.integers(0, 99), resend_orphans=st.booleans())
        def redeliver(self, index: int, resend_orphans: bool) -> None:
            """A stale copy of a job (one that already reached a worker) comes back: the broker's redelivery."""
            self.admit(self.pick(self.seen, index), resend_orphans=resend_orphans)

        @precondition(lambda self: any(w.state == "alive" for w in self.workers))
        @rule(index=st.integers(0, 99), outcome=st.sampled_from(["delivered", "dead", "retry_now", "retry_later"]))
        def answer(self, index: int, outcome: str) -> None:
            """Meta answers a live worker's POST: delivered, refused, or a transient error."""
            self.record(self.pick([w for w in self.workers if w.state == "alive"], index), outcome)

        @precondition(lambda self: any(w.state == "slow" for w in self.workers))
        @rule(index=st.integers(0, 99), outcome=st.sampled_from(["delivered", "dead", "retry_now", "retry_later"]))
        def answer_late(self, index: int, outcome: str) -> None:
            """A worker whose lock expired under it records its outcome after all (nobody took the job over)."""
            self.record(self.pick([w for w in self.workers if w.state == "slow"], index), outcome)

        @precondition(lambda self: any(w.state == "superseded" for w in self.workers))
        @rule(index=st.integers(0, 99), outcome=st.sampled_from(["dead", "retry_now", "retry_later"]))
        def answer_superseded(self, index: int, outcome: str) -> None:
            """A stalled worker whose attempt admission classified lost meanwhile records a failure after all: the
            job (sending again, or ended) must not change. (Its late *delivery* would win, as lua/finish.lua says:
            not modelled here.)"""
            worker = self.pick([w for w in self.workers if w.state == "superseded"], index)
            entry = {"attempt": worker.attempt, "at": time.time(), "latency_ms": 1.0, "outcome": outcome}
            if outcome == "dead":
                self.outcomes.dead(worker.job.id, "permanent: refused", {"code": 551}, entry,
                                   conversation=records.conversation_of(worker.job.message))
            else:
                self.outcomes.retry(worker.job.id, self.now() + (LATER if outcome == "retry_later" else -1.0),
                                    reason="transient", error={"code": 2}, attempt_entry=entry)
            self.workers.remove(worker)
            self.note(worker.job, f"superseded:{outcome}")

        def _lock_gone(self, worker: Worker, state: str) -> None:
            worker.state = state
            self.r.delete(lock_key(worker.job.id))
            # the lock's time has come: so has the in-flight entry's (scored by when the lock would expire)
            self.r.zadd(INFLIGHT_KEY, {worker.job.id: self.now() - 0.001}, xx=True)
            self.note(worker.job, f"lock:{state}")

        @precondition(lambda self: any(w.state == "alive" for w in self.workers))
        @rule(index=st.integers(0, 99))
        def lose(self, index: int) -> None:
            """The worker dies mid-POST: its lock expires, its in-flight entry stays."""
            self._lock_gone(self.pick([w for w in self.workers if w.state == "alive"], index), "dead")

        @precondition(lambda self: any(w.state == "alive" for w in self.workers))
        @rule(index=st.integers(0, 99))
        def expire_lock(self, index: int) -> None:
            """The lock expires under a live worker (it stalled): it may still record its outcome."""
            self._lock_gone(self.pick([w for w in self.workers if w.state == "alive"], index), "slow")

        @precondition(lambda self: self.jobs)
        @rule(index=st.integers(0, 99), by_producer=st.booleans())
        def cancel(self, index: int, by_producer: bool) -> None:
            job = self.pick(self.jobs, index)
            try:
                if by_producer:
                    producers.Job(job.id).cancel()
                else:
                    records.cancel(self.client, job.id, reason="cancelled by the test", record_ttl=3600)
            except CancelRefused:
                assert job.status not in CANCELLABLE, f"{job.id} ({job.status}, {job.history}): cancel refused"
                self.note(job, "cancel:refused")
                return
            assert job.status in CANCELLABLE, f"{job.id} ({job.status}, {job.history}): cancelled"
            job.status, job.due = "cancelled", None
            self.end_in_conversation(job)
            self.note(job, "cancelled")

        @precondition(lambda self: self.jobs)
        @rule(index=st.integers(0, 99))
        def replay(self, index: int) -> None:
            job = self.pick(self.jobs, index)
            replayed = dlq.replay(job.id, client=self.client)
            assert replayed == (job.status in ("dead", "unknown")), (job.id, job.status, job.history)
            if replayed:
                job.status = "queued"
                self.note(job, "replayed")

        @rule()
        def sweep(self) -> None:
            Sweeper(self.client, lost_after=0).sweep()

        @precondition(lambda self: any(j.due is not None and j.status in ("scheduled", "retrying")
                                       for j in self.jobs))
        @rule(index=st.integers(0, 99))
        def time_passes(self, index: int) -> None:
            """The time of one waiting job (scheduled, or retrying in an hour) comes."""
            job = self.pick([j for j in self.jobs if j.due is not None and j.status in ("scheduled", "retrying")],
                            index)
            now = self.now() - 0.001
            self.r.hset(job_key(job.id), "next_attempt_at", f"{now:.6f}")
            self.r.zadd(DELAYED_KEY, {job.id: now}, xx=True)
            job.due = now
            self.note(job, "due")

        @precondition(lambda self: getattr(self, "restarts_allowed", False) and self.restarts < 2)
        @rule()
        def restart_redis(self) -> None:
            """Redis restarts (at most twice an example: each costs a server's start)."""
            server.restart()
            self.restarts += 1
            for job in self.jobs:
                self.note(job, "redis restarted")

        # --- invariants --------------------------------------------------------------------------------------

        @invariant()
        def records_agree_with_the_model(self) -> None:
            if not self.jobs:
                return
            found = records.statuses(self.client, [job.id for job in self.jobs])
            for job, status in zip(self.jobs, found, strict=True):
                assert status.value == job.status, f"{job.id}: Redis says {status}, the model {job.status}: " \
                                                   f"{job.history}"
                assert bool(self.r.exists(lock_key(job.id))) == self.lock_held(job), (job.id, job.history)

        @invariant()
        def indexes_agree_with_the_records(self) -> None:
            now = self.now()
            inflight = set(cast(list[str], self.r.zrange(INFLIGHT_KEY, 0, -1)))
            pending = set(cast(list[str], self.r.zrange(PENDING_KEY, 0, -1)))
            delayed = dict(cast(list[tuple[str, float]], self.r.zrange(DELAYED_KEY, 0, -1, withscores=True)))
            assert not self.r.llen(MOVING_KEY), "a move was left half done"
            dlq_index = set(cast(list[str], self.r.zrange(DLQ_INDEX_KEY, 0, -1)))
            dlq_entries = set(cast(list[str], self.r.hkeys(DLQ_KEY)))
            lanes: list[str] = []
            for key in cast(list[str], self.r.keys(f"{LANE_PREFIX}*")):
                lanes += cast(list[str], self.r.lrange(key, 0, -1))
            queued: list[str] = []
            for key in queue_keys():
                queued += [job_id for raw in cast(list[str], self.r.lrange(key, 0, -1)) for job_id in jobs_of(raw)]
            by_id = {job.id: job for job in self.jobs}

            assert dlq_index == dlq_entries == {j.id for j in self.jobs if j.status in ("dead", "unknown")}, \
                (dlq_index, dlq_entries)
            for job_id in inflight:
                assert by_id[job_id].status == "sending", (job_id, by_id[job_id].history)
            for job_id in delayed:
                assert by_id[job_id].status in DELAYABLE, (job_id, by_id[job_id].history)
            assert len(lanes) == len(set(lanes)), f"a lane holds a job twice: {lanes}"
            for job_id in lanes:
                # a job in its lane was never handed out, so nothing but a cancel can have touched it
                assert by_id[job_id].status in ("queued", "cancelled"), (job_id, by_id[job_id].history)
            for job in self.jobs:
                where = {"lane": job.id in lanes, "delayed": job.id in delayed, "pending": job.id in pending,
                         "inflight": job.id in inflight, "queue": job.id in queued}
                context = f"{job.id} ({job.status}) {where}: {job.history}"
                if job.inflight:
                    # an attempt in flight comes back to a worker should its worker be lost
                    assert where["inflight"] or where["pending"] or self.lock_held(job), context
                    continue
                if job.status in FINAL or job.status == "sending":
                    continue
                waiting_for = self.predecessors_alive(job)
                if waiting_for:
                    # an ordered job is not due before its predecessors are done with
                    assert not (where["lane"] or where["delayed"] or where["queue"]), context
                    continue
                # owed a send and due (or waiting for its time): it is somewhere a worker or the scheduler finds it
                assert where["lane"] or where["delayed"] or where["pending"], context
                if job.status == "queued" and where["delayed"]:
                    assert delayed[job.id] <= now + 0.001, context  # released: due at once
                if job.status in ("scheduled", "retrying") and job.due is not None and not where["pending"]:
                    assert where["delayed"], context

        @invariant()
        def attempts_count_the_posts(self) -> None:
            """One POST per admission (``go``), each counted in the record, the delivered one's compact record too;
            that each came only after the one before ended is what ``expected_admission`` checks at each."""
            for job in self.jobs:
                attempts = records.read(self.client, job.id)["attempts"]
                assert attempts == job.posts, (job.id, attempts, job.posts, job.history)

    return RecordStates


# --- pytest -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.conftest import reset_client_caches

    server = Server(tmp_path_factory.mktemp("record-states-redis"))
    before = os.environ.get("IGSEND_REDIS_URL")
    os.environ["IGSEND_REDIS_URL"] = server.url()
    reset_client_caches()
    yield server
    if before is None:
        os.environ.pop("IGSEND_REDIS_URL", None)
    else:
        os.environ["IGSEND_REDIS_URL"] = before
    reset_client_caches()
    server.stop()


def run(server: Server, *, examples: int, steps: int, restarts: bool = True, randomize: bool = False) -> None:
    """Run the machine for ``examples`` examples of up to ``steps`` steps each, the same ones every run unless
    ``randomize`` (``ops/fuzz_records.py``)."""
    machine = record_machine(server)
    machine.restarts_allowed = restarts  # type: ignore[attr-defined]
    options = settings(max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=not randomize,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                       database=None, print_blob=True)
    run_state_machine_as_test(machine, settings=options)


@pytest.mark.timeout(1200)  # a failure is shrunk to its fewest steps, which takes minutes; a pass about 15 s
def jobs_of(raw: str) -> list[str]:
    """The job ids a Celery message on igsend's queue stands for: an igsend.send_chunk's (its ``igsend_jobs``
    header), or the one job of an igsend.send_message."""
    headers = json.loads(raw)["headers"]
    return list(headers.get("igsend_jobs") or [headers["id"]])


def test_the_job_records_state_machine(own_redis: Server) -> None:
    """CI's bounded run (derandomized: the same examples every run); ``ops/fuzz_records.py`` runs more."""
    run(own_redis, examples=60, steps=40)
