"""Validate messages and put them on the queue: a job record first, then the Celery message."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError

from igsend.core import inbound, lanes, presence, records, routing, tracing
from igsend.core.celery_app import NEW_PRIORITY, get_app, publish, queue_keys
from igsend.core.errors import IdempotencyConflict, IgsendError, OutsideWindow
from igsend.core.groups import Group
from igsend.core.groups import job_id as new_job_id
from igsend.core.presence import Presence
from igsend.core.settings import get_settings
from igsend.core.store import (
    DELAYED_KEY,
    NO_IDEMPOTENCY_KEY,
    PENDING_KEY,
    STATS_KEY,
    conversation_counter_key,
    conversation_key,
    get_redis,
    idempotency_key,
    job_key,
    memory_share,
)
from producers.jobs import Job
from schemas import FACEBOOK_LOGIN_ONLY, SEND_CLASS, InvalidMessage, load_message

# What the create_job script (igsend/core/lua/create_job.lua) answers for each message.
#: What create_job answered: created (publish now), created to wait (scheduled, or behind an earlier message of its
#: ordered conversation: the scheduler publishes it), created into its account's lane (the dispatcher publishes it:
#: igsend.core.lanes), the key's job already, the key names another message.
CREATED, WAITING, LANED, DUPLICATE, CONFLICT = 1, 2, 3, 0, -1
ACCEPTED = (CREATED, WAITING, LANED)


class EnqueueError(IgsendError, RuntimeError):
    """The broker did not take the message(s): none of the call's job ids is valid; sending again is safe."""


class RedisFull(EnqueueError):
    """Redis is (nearly) out of memory: new messages are refused, queued ones keep being delivered.
    ``retry_after`` is a hint, in seconds, for when to try again."""

    retry_after = 30


class NotReplicated(EnqueueError):
    """Fewer replicas than IGSEND_REDIS_REPLICA_ACKS confirmed the call's records and messages in time: what was
    still queued was taken back, and a message without an idempotency key that a worker had already taken was
    cancelled. Send again with the same idempotency keys: they answer with a job a worker had taken, or one that
    the server promoted by a failover kept out of the take-back's reach, instead of queuing it twice."""


# Takes the call's messages back out of the broker's lists. Kombu LPUSHes new messages, so they are near the head;
# a message is JSON whose headers carry its task id ("id": "<job id>"; kombu serializes with json.dumps' default
# separators). Returns the ids it found; a message a worker already took has a cancelled record instead.
_UNPUBLISH = """
local wanted, removed = {}, {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
for _, key in ipairs(KEYS) do
  for _, item in ipairs(redis.call('LRANGE', key, 0, tonumber(ARGV[1]) - 1)) do
    local id = string.match(item, '"id": "([^"]+)"')
    if id and wanted[id] then
      redis.call('LREM', key, 1, item)
      wanted[id] = nil
      removed[#removed + 1] = id
    end
  end
end
return removed
"""


def _confirm_replicated(client: Any, fresh: list[tuple[str, str]], laned: dict[str, str]) -> None:
    """The WAIT step (IGSEND_REDIS_REPLICA_ACKS > 0): one small write on this connection (it follows the call's
    records and, in Redis's replication stream, its messages), then WAIT for the replicas to hold it. On a shortfall
    or an error, take back what the call wrote (from the broker's lists, and ``laned``: job id -> its lane, from
    the lanes) and raise NotReplicated."""
    settings = get_settings()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(STATS_KEY, "replica_waits_total", 1)
        # Were the records written on this server? A pipeline retried on a new primary would WAIT for its own
        # write only: records lost with the old primary must not pass for confirmed.
        pipe.exists(*[job_key(job_id) for job_id, _ in fresh])
        records.wait_for_replicas(pipe, settings.replica_acks, settings.replica_timeout)
        _, present, confirmed = pipe.execute()
        if present < len(fresh):
            raise records.NotReplicated(f"{len(fresh) - present} of {len(fresh)} record(s) are not on the primary "
                                        "(it failed over)")
        records.check_replicas(confirmed, settings.replica_acks, settings.replica_timeout, f"{len(fresh)} message(s)")
        return
    except (RedisError, records.NotReplicated) as exc:
        failure: Exception = exc
    ids = [job_id for job_id, _ in fresh]
    with contextlib.suppress(RedisError):
        removed = set(client.eval(_UNPUBLISH, len(queue_keys()), *queue_keys(), 2 * len(ids) + 1000, *ids))
        removed |= _take_out_of_lanes(client, laned)
        keyed = {job_id for job_id, idem in fresh if idem != NO_IDEMPOTENCY_KEY}
        records.discard(client, [i for i in ids if i in removed],
                        [idem for job_id, idem in fresh if job_id in removed and idem != NO_IDEMPOTENCY_KEY])
        # A message a worker already took may be on its way to Meta. With an idempotency key it is left to finish:
        # the caller's second call gets its job back. Without one, it is cancelled (refused if not yet sent).
        records.abandon(client, [i for i in ids if i not in removed and i not in keyed], "not replicated")
    raise NotReplicated(f"{failure}; what was still queued was taken back: send again with the same idempotency "
                        "keys (they answer with a job a worker had already taken, or one a new primary kept, instead "
                        "of queuing it twice)") from failure


def _take_out_of_lanes(client: Any, laned: dict[str, str]) -> set[str]:
    """The jobs of ``laned`` (job id -> its lane) still waiting in their lane, taken out of it: the dispatcher has
    not handed them to any worker."""
    if not laned:
        return set()
    pipe = client.pipeline(transaction=False)
    for job_id, lane in laned.items():
        for priority in lanes.PRIORITIES:
            pipe.lrem(f"{lane}:{priority}", 1, job_id)
    counts = pipe.execute()
    return {job_id for index, job_id in enumerate(laned) if counts[2 * index] or counts[2 * index + 1]}


#: Producers refuse new messages from this share of maxmemory, so workers keep room to finish the queue.
REFUSE_FROM = 0.95


def check_room(client: Any) -> None:
    """Raise RedisFull when Redis is above REFUSE_FROM of its maxmemory: one INFO per call (a batch of up to
    1,000 messages is one call), read fresh, since a Redis that reaches maxmemory refuses workers' writes too."""
    share = memory_share(client) or 0.0
    if share >= REFUSE_FROM:
        raise RedisFull(f"Redis is {share:.0%} full (maxmemory): new messages are refused until the workers "
                        "deliver the queue or an operator makes room; nothing was queued")


#: How long a private reply's comment keeps its job: Meta takes a private reply within 7 days of the comment, so a
#: second one (a retried webhook handler) is answered with the first job for as long as Meta would accept one.
PRIVATE_REPLY_KEY_SECONDS = 8 * 24 * 3600


def _flatten(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def enqueue(document: dict[str, Any]) -> Job:
    """Validate one message document and queue it. Raises InvalidMessage (nothing queued), IdempotencyConflict
    (its key already names a different message; nothing queued) or EnqueueError."""
    message = load_message(document)
    with routing.for_account(message["account"]) as group:  # UnknownAccount: in no group of IGSEND_GROUPS
        check_sendable(_presence(), message)
        for refused in check_windows([message]).values():
            raise refused
        placed = _place([message], group)[0]
    if placed.conflict is not None:
        raise placed.conflict
    return placed.job


def validate_many(documents: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[int, InvalidMessage]]:
    """Validate a batch; return the valid messages and, by position, the errors of the others. With groups, each
    message is checked against its account's group (its workers, its windows); an account in no group is refused
    (UnknownAccount)."""
    checked: list[tuple[int, dict[str, Any], Group | None]] = []
    errors: dict[int, InvalidMessage] = {}
    known: dict[str | None, Presence] = {}  # the workers' registry of each group, read once per batch
    for index, document in enumerate(documents):
        try:
            message = load_message(document)
            group = routing.group_of_account(message["account"])
            name = group.name if group else None
            with routing.in_group(group):
                if name not in known:
                    known[name] = _presence()
                check_sendable(known[name], message)
            checked.append((index, message, group))
        except InvalidMessage as exc:
            errors[index] = exc
    outside: set[int] = set()
    for group, positions in _by_group([(position, group) for position, (_, _, group) in enumerate(checked)]):
        with routing.in_group(group):
            refused = check_windows([checked[position][1] for position in positions])
        for place, error in refused.items():
            errors[checked[positions[place]][0]] = error
            outside.add(positions[place])
    return [message for position, (_, message, _) in enumerate(checked) if position not in outside], errors


def _by_group(items: list[tuple[int, Group | None]]) -> list[tuple[Group | None, list[int]]]:
    """Positions by group, groups in order of first appearance (one entry, None, without groups)."""
    found: dict[str | None, tuple[Group | None, list[int]]] = {}
    for position, group in items:
        found.setdefault(group.name if group else None, (group, []))[1].append(position)
    return list(found.values())


def check_windows(messages: list[dict[str, Any]]) -> dict[int, OutsideWindow]:
    """By position, the messages whose window is known to be closed (or to close before their ``send_at``): the
    person's last message as igsend's webhooks remember it, or the caller's ``last_user_message_at``. One MGET for
    the whole batch. Nothing known: the message is sent and Meta decides."""
    if not messages:
        return {}
    opened = get_redis().mget([inbound.window_of(message)[0] for message in messages])
    now = time.time()
    refused = {}
    for position, (message, value) in enumerate(zip(messages, opened, strict=True)):
        why = inbound.outside_window(message, float(value) if value else None, now)
        if why is not None:
            refused[position] = OutsideWindow(*why)
    return refused


log = logging.getLogger("igsend.producers")
_last_warned = 0.0


def _presence() -> Presence:
    """The workers' registry (cached briefly: a batch reads it once); says so in the log, at most once a
    minute, when no worker is alive to take what is queued."""
    global _last_warned
    known = presence.current()
    if not known.workers and time.monotonic() - _last_warned > 60:
        _last_warned = time.monotonic()
        log.warning("%s", presence.no_worker_warning())
    return known


def check_sendable(known: Presence, message: dict[str, Any]) -> None:
    """Refuse, before queueing, what no worker could send: an account no worker serves (UnknownAccount, an
    InvalidMessage of the field ``account``), or a kind Meta offers only to Facebook-Login accounts for an account
    the workers say uses Instagram Login. Fills in the account's ``ordered`` default."""
    known.check(message["account"])
    kind, account = message["kind"], message["account"]
    about = known.served().get(account) or known.known.get(account) or {}
    if about.get("ordered") and "ordered" not in message and "recipient" in message:
        message["ordered"] = True  # the account's default (ordered = true in the workers' accounts file)
    if kind in FACEBOOK_LOGIN_ONLY and about.get("login") == "instagram":
        raise InvalidMessage({"kind": [f"{kind} needs a Facebook-Login (Page-linked) account: Meta offers it only "
                                       f"there, and the account {account!r} uses Instagram Login"]})


def _argsrepr(message: dict[str, Any]) -> str:
    """What logs and Flower show as the task's arguments: who, to whom, what kind (Celery's generic
    saferepr of the whole document costs more than the rest of the publish)."""
    return repr([{key: message.get(key) for key in ("kind", "recipient", "account")}])


def fingerprint(message: dict[str, Any]) -> str:
    """The sha256 of a validated message in canonical JSON (sorted keys, no idempotency key): what an idempotency
    key is bound to, so that "the same message" means the same fields after defaults are filled in."""
    canonical = {key: value for key, value in message.items() if key != "idempotency_key"}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Placement:
    """What became of one message of a call: queued by this call (``new``), answered with the job its
    idempotency key already named (not ``new``; nothing queued), or refused (``conflict``: the key names a
    different message)."""

    job: Job
    new: bool
    conflict: IdempotencyConflict | None = None


def enqueue_many(messages: list[dict[str, Any]]) -> list[Job]:
    """Queue already-validated messages; return each one's job (the existing one where an idempotency key
    already named it). Raises IdempotencyConflict for the first message whose key names a different message,
    after the others were queued: use :func:`place_many` (or ``send_many``) for per-message answers."""
    placements = place_many(messages)
    for placed in placements:
        if placed.conflict is not None:
            raise placed.conflict
    return [placed.job for placed in placements]


def place_many(messages: list[dict[str, Any]]) -> list[Placement]:
    """Queue already-validated messages in pipelined round trips: the job records (one Lua call each, so an
    idempotency key is claimed atomically) in one pipeline, then the Celery messages in one kombu publish
    batch. A key repeated inside the call queues one job: the pipeline runs the calls in order, so the later
    ones find the key claimed. If the broker fails, nothing of the call counts as queued and EnqueueError is
    raised.

    With groups (IGSEND_GROUPS) each group's messages go to its Redis in the same way, group after group: a
    failure leaves the earlier groups' messages queued, and the error says how many (send them again with the
    same idempotency keys: those answer with the jobs already queued)."""
    by_group = _by_group([(index, routing.group_of_account(message["account"]))
                          for index, message in enumerate(messages)])
    if len(by_group) <= 1:
        with routing.in_group(by_group[0][0] if by_group else None):
            return _place(messages, by_group[0][0] if by_group else None)
    placements: dict[int, Placement] = {}
    for group, positions in by_group:
        try:
            with routing.in_group(group):
                placed = _place([messages[index] for index in positions], group)
        except EnqueueError as exc:
            if not placements:
                raise
            raise type(exc)(f"group {group.name if group else '-'}: {exc} ({len(placements)} message(s) of "
                            "other groups were queued before it)") from exc
        placements.update(zip(positions, placed, strict=True))
    return [placements[index] for index in range(len(messages))]


def _place(messages: list[dict[str, Any]], group: Group | None) -> list[Placement]:
    """:func:`_place_in_group` in an ``igsend.enqueue`` span when traces are on (igsend.core.tracing): each job's
    record keeps that span's ``traceparent``, so the worker's spans join the caller's trace."""
    if not tracing.on():
        return _place_in_group(messages, group)
    with tracing.span("igsend.enqueue", attributes={"igsend.messages": len(messages)}) as current:
        placed = _place_in_group(messages, group)
        current.set_attribute("igsend.queued", sum(1 for p in placed if p.new))
        if len(placed) == 1:
            current.set_attribute("igsend.job_id", placed[0].job.id)
        return placed


def _place_in_group(messages: list[dict[str, Any]], group: Group | None) -> list[Placement]:
    """:func:`place_many` for messages of one group, inside its block (``routing.in_group``)."""
    settings = get_settings()
    redis = get_redis()
    check_room(redis)
    script = records.script(redis, "create_job")
    now = time.time()
    parent = tracing.traceparent()  # the enqueue span's: kept with each job for the worker's spans
    planned = []
    try:
        pipe = redis.pipeline(transaction=False)
        for message in messages:
            message = dict(message)
            key = message.pop("idempotency_key", None)
            window = settings.idempotency_window
            if message["kind"] == "private_reply":  # Meta allows one per comment: the comment is the key
                key, window = f"comment:{message['comment_id']}", max(window, PRIVATE_REPLY_KEY_SECONDS)
            job_id = new_job_id(group.name if group else None, str(uuid.uuid4()))
            idem = idempotency_key(message["account"], key) if key else NO_IDEMPOTENCY_KEY
            due = records.scheduled_for(message, now)
            conversation = (message["account"], records.recipient_of(message))
            keys = [job_key(job_id), idem, PENDING_KEY, DELAYED_KEY, conversation_key(*conversation),
                    conversation_counter_key(*conversation), *lanes.lane_keys(message["account"],
                                                                              SEND_CLASS[message["kind"]])]
            # a scheduled record must outlive its wait: the usual retention counts from when it is due
            ttl = settings.result_ttl + (math.ceil(due - now) if due is not None else 0)
            script(keys=keys,
                   args=[job_id, ttl, max(window, ttl) if due is not None else window, fingerprint(message),
                         *_flatten(records.new_record(job_id, message, idempotency_key=key, now=now)),
                         *(("traceparent", parent) if parent else ())],
                   client=pipe)
            planned.append((message, idem, key, due))
        outcomes = pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise EnqueueError(f"could not record the messages: {type(exc).__name__}: {exc}") from exc
    errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    if errors:  # e.g. Redis full halfway through: take back what this call did write, so nothing is half-queued
        created = [(job_id, idem) for (_, idem, _, _), outcome in zip(planned, outcomes, strict=True)
                   if not isinstance(outcome, Exception) and outcome[0] in ACCEPTED
                   for job_id in [outcome[1]]]
        with contextlib.suppress(RedisError):
            records.discard(redis, [job_id for job_id, _ in created],
                            [idem for _, idem in created if idem != NO_IDEMPOTENCY_KEY])
        if any(isinstance(error, OutOfMemoryError) for error in errors):
            raise RedisFull("Redis is full: it refused the messages (out of memory, maxmemory); nothing was queued") \
                from errors[0]
        raise EnqueueError(f"could not record the messages: {type(errors[0]).__name__}: {errors[0]}") \
            from errors[0]
    # scheduled jobs, and ordered ones behind an earlier one, wait: the scheduler publishes them when due
    fresh = [(message, idem, job_id) for (message, idem, _, _), (outcome, job_id)
             in zip(planned, outcomes, strict=True) if outcome == CREATED]
    app = get_app()
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for message, _, job_id in fresh:
                publish(app, producer, job_id, message, priority=NEW_PRIORITY, argsrepr=_argsrepr(message))
    except Exception as exc:
        with contextlib.suppress(RedisError):
            records.abandon(redis, [job_id for _, _, job_id in fresh], "publish failed")
        with contextlib.suppress(RedisError):
            idems = [idem for _, idem, _ in fresh if idem != NO_IDEMPOTENCY_KEY]
            if idems:
                redis.delete(*idems)
        raise EnqueueError(f"could not queue {len(fresh)} message(s): {type(exc).__name__}: {exc}") from exc
    created = [(job_id, idem) for (_, idem, _, _), (outcome, job_id) in zip(planned, outcomes, strict=True)
               if outcome in ACCEPTED]
    if settings.replica_acks and created:
        laned = {job_id: lanes.lane_key(message["account"], SEND_CLASS[message["kind"]])
                 for (message, _, _, _), (outcome, job_id) in zip(planned, outcomes, strict=True) if outcome == LANED}
        _confirm_replicated(redis, created, laned)
    return [Placement(Job(job_id), outcome in ACCEPTED,
                      IdempotencyConflict(key, job_id) if outcome == CONFLICT else None)
            for (_, _, key, _), (outcome, job_id) in zip(planned, outcomes, strict=True)]
