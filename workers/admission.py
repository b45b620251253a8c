"""Admission: one atomic Redis step that decides whether a job may POST now, and books its rate slot.

The step reads the job record, the job's lock, the account's state and the account's rate limiter, so a
message costs one round trip before its POST. It runs on Redis's clock (``TIME``), shared by every worker.

The limiter is GCRA (generic cell rate algorithm) per account and send class: each send books the next slot
``1/rate`` seconds after the previous one, so all workers together never exceed the budget. A job whose slot
is near waits for it in place; a job whose slot is further off is parked in ``igsend:delayed`` with its slot
booked (``slot_at``) and comes back when it is due, so no worker slot is held and nothing busy-loops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from igsend.core import inbound, records, tracing
from igsend.core.store import (
    DELAYED_KEY,
    INFLIGHT_KEY,
    NO_CONVERSATION_KEY,
    PENDING_KEY,
    account_key,
    done_key,
    held_key,
    job_key,
    limiter_key,
    lock_key,
)


class Action(StrEnum):
    """What admission decided for one copy of a job."""

    GO = "go"  # POST after ``wait`` seconds
    DONE = "done"  # already final
    BUSY = "busy"  # another execution holds the job's lock
    ORPHANED = "orphaned"  # an earlier POST's answer was lost
    EARLY = "early"  # a stale copy; the parked one will come
    HELD = "held"  # the account is unhealthy
    DEFERRED = "deferred"  # the account is paused
    PARKED = "parked"  # a rate slot is booked for later
    WAITING = "waiting"  # an ordered job behind an earlier one of its conversation; that one's end makes it due
    WINDOW_CLOSED = "window_closed"  # the person's window closed while it waited: ``detail`` says when it opened
    UNREPLICATED = "unreplicated"  # admitted on the primary only (IGSEND_REDIS_REPLICA_ACKS): must not POST


@dataclass(frozen=True)
class Admission:
    action: Action
    wait: float = 0.0
    attempt: int = 0
    created_at: float = 0.0
    detail: str = ""


class Admitter:
    """Runs the admission step; keyword options are the policy knobs."""

    def __init__(self, client: redis.Redis, *, lock_ttl: float = 30.0, max_inline_wait: float = 0.5,
                 late_tolerance: float = 0.25, record_ttl: int = 7 * 24 * 3600, replica_acks: int = 0,
                 replica_timeout: float = 1.0):
        self.client = client
        # IGSEND_REDIS_REPLICA_ACKS: a job may POST only once this many replicas hold its admission. A failover
        # then cannot forget that the job was in flight, so a redelivered copy is never sent again (at worst it
        # ends ``unknown``); an admission the replicas did not confirm is not sent at all (Action.UNREPLICATED).
        self.replica_acks = replica_acks
        self.replica_timeout = replica_timeout
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.max_inline_wait = max_inline_wait
        # A booked slot used later than this is booked anew: sending late alongside on-time slots would bunch
        # up to rate x lateness extra calls into one second.
        self.late_tolerance = late_tolerance
        self.record_ttl = record_ttl
        self.script = records.script(client, "admit")  # igsend/core/lua/admit.lua

    def admit(self, job_id: str, message: dict[str, Any], send_class: str, rate: float, *,
              lock_ttl: float | None = None) -> Admission:
        """``lock_ttl``: seconds the job's lock lives (its POST's deadline plus a margin; Settings.lock_ttl)."""
        if not tracing.on():
            return self._admit(job_id, message, send_class, rate, lock_ttl=lock_ttl)
        with tracing.span("igsend.admit", attributes={"igsend.send_class": send_class}) as current:
            admission = self._admit(job_id, message, send_class, rate, lock_ttl=lock_ttl)
            current.set_attribute("igsend.admission", admission.action.value)
            if admission.wait > 0:
                current.set_attribute("igsend.rate_wait_s", admission.wait)
            return admission

    def _admit(self, job_id: str, message: dict[str, Any], send_class: str, rate: float, *,
               lock_ttl: float | None) -> Admission:
        account = message["account"]
        window_key, window_seconds, _ = inbound.window_of(message)
        keys = [job_key(job_id), lock_key(job_id), account_key(account), limiter_key(account, send_class),
                DELAYED_KEY, held_key(account), PENDING_KEY, INFLIGHT_KEY, done_key(job_id),
                records.conversation_of(message) or NO_CONVERSATION_KEY, window_key]
        lock_ttl_ms = int(lock_ttl * 1000) if lock_ttl else self.lock_ttl_ms
        # The message's JSON only for a job with no record yet (a raw client's), which the script asks for: the
        # producers wrote it into the record, so encoding and shipping it on every admission would be wasted.
        args = [job_id, lock_ttl_ms, rate, self.max_inline_wait, self.record_ttl, "", message["kind"], account,
                records.recipient_of(message), self.late_tolerance, job_key(""), window_seconds,
                message.get("last_user_message_at") or ""]
        reply, confirmed = self._run(keys, args)
        if reply[0] == "need_message":
            args[5] = json.dumps(message, ensure_ascii=False)
            reply, confirmed = self._run(keys, args)
        action = Action(reply[0])
        if action is Action.GO and int(confirmed) < self.replica_acks:
            return Admission(Action.UNREPLICATED, attempt=int(reply[2]),
                             detail=f"its admission reached {confirmed} of the {self.replica_acks} replica(s) "
                                    f"IGSEND_REDIS_REPLICA_ACKS asks for within {self.replica_timeout:g} s; not "
                                    "sent, due again in a second")
        if action is Action.GO:
            return Admission(action, wait=float(reply[1]), attempt=int(reply[2]), created_at=float(reply[3]))
        return Admission(action, detail=reply[1])  # every reply but need_message carries one (admit.lua)

    def _run(self, keys: list[str], args: list[Any]) -> tuple[list[Any], int]:
        """The script's reply, and how many replicas confirmed its writes (0 unless replica_acks asks)."""
        if not self.replica_acks:
            return self.script(keys=keys, args=args), 0
        # One pipeline, so the WAIT runs on the connection that ran the script (WAIT counts that connection's
        # writes), and a pipeline retried on a new primary runs the script there again before its WAIT.
        pipe = self.client.pipeline(transaction=False)
        self.script(keys=keys, args=args, client=pipe)
        records.wait_for_replicas(pipe, self.replica_acks, self.replica_timeout)
        reply, confirmed = pipe.execute()
        return reply, int(confirmed)
