"""The ``igsend.send_message`` task: validate, get admitted, POST once, record what happened.

The task's argument is the flat message document (an account *name*, never a token); the Celery task id is
the job id. Any Celery client can publish it with ``send_task("igsend.send_message", args=[document])``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

import redis
import requests
from celery import Task
from celery.exceptions import Ignore
from celery.worker.request import Request as CeleryRequest

from igsend.core import account_state, inbound, tracing
from igsend.core.celery_app import TASK_NAME, get_app, summarize_arguments
from igsend.core.errors import IgsendError
from igsend.core.records import JobStatus, NotReplicated, Outcomes, conversation_of, recipient_of
from igsend.core.settings import get_settings
from igsend.core.store import get_redis, job_key, lock_key
from schemas import FACEBOOK_LOGIN_ONLY, SEND_CLASS, InvalidMessage, graph_body, load_message, staged
from workers import uploads
from workers.accounts import (
    Account,
    AccountError,
    accounts_of_app,
    get_account,
    newer_token_from_file,
    registry,
    secrets,
)
from workers.admission import Action, Admitter
from workers.breaker import Breaker, reset_keys
from workers.errors import Outcome, Verdict, classify_answer, classify_transport
from workers.graph import GraphClient
from workers.logs import redact
from workers.metrics import (
    ATTEMPTS,
    FINISHED,
    GRAPH_LATENCY,
    HELD_CONVERSATIONS,
    ORDER_WAITS,
    RATE_WAITS,
    RECONCILED,
    RETRIES,
    TOKEN_RELOADS,
)
from workers.reconcile import Found, Reconciler
from workers.retry import RetryPolicy, throttle_wait
from workers.usage import read_usage, retry_after

log = logging.getLogger("igsend.send")
app = get_app()

MAX_DLQ_DOCUMENT = 10_000  # characters of a malformed document kept in its DLQ entry
#: Seconds until a job whose admission the replicas did not confirm is due again (a failover's first seconds).
UNREPLICATED_DELAY = 1.0
#: Seconds a worker keeps writing a delivered record the replicas have not confirmed: a Sentinel failover with
#: its defaults (down-after 30 s) plus the new primary's replicas coming back in sync.
RECORD_PATIENCE = 60.0


class DeadLettered(IgsendError):
    """Raised so Celery (and Flower) show the task as failed; the text carries the reason, never a token.
    Declared in the task's ``throws``: Celery logs it as one line, without a traceback.

    What a raw Celery client's ``AsyncResult`` gets (docs/sending.md "Raw Celery clients"): ``args[0]`` the text
    (``"dead: permanent: ... (Graph error 100/2018001)"``), ``args[1]`` ``{"status", "reason", "code",
    "subcode", "message", "fbtrace_id", "http_status", "class"}`` (Graph fields ``None`` when Meta never
    answered with an error)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Context:
    """Per-process parts, built once on first use: clients, policy, and the last slowdown written."""

    def __init__(self) -> None:
        settings = get_settings()
        self.settings = settings
        self.redis = get_redis()
        self.admitter = Admitter(self.redis, record_ttl=settings.result_ttl, replica_acks=settings.replica_acks,
                                 replica_timeout=settings.replica_timeout)
        self.outcomes = Outcomes(self.redis, record_ttl=settings.result_ttl, delivered_ttl=settings.delivered_ttl,
                                 dlq_max=settings.dlq_max, dlq_archive=settings.dlq_archive)
        self.policy = RetryPolicy(max_attempts=settings.max_attempts, max_age=settings.max_age,
                                  base=settings.retry_base, cap=settings.retry_cap)
        pool = int(app.conf.worker_concurrency or 10)
        self.graph = GraphClient(pool_size=max(10, pool))
        self.breaker = Breaker(self.redis)
        self.secrets = secrets()
        self.reconciler = Reconciler(self.redis, redact=self.scrub, delivered_ttl=settings.delivered_ttl)
        self.slowdown: dict[str, float] = {}

    def scrub(self, text: str) -> str:
        """``text`` with every configured secret, and anything token-shaped, blanked out."""
        text = redact(text)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


_context: _Context | None = None
_context_lock = threading.Lock()


def context() -> _Context:
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                _context = _Context()
    return _context


def use_graph_client(client: GraphClient) -> GraphClient:
    """Send this process's POSTs through ``client`` from now on; returns the client it replaces.

    The one seam between the delivery policy and the network: the in-process tests pass a fake whose ``send``
    answers scripted ``GraphResponse``s (or raises ``requests`` exceptions), so everything else (admission,
    the job record, the DLQ, account state, the breaker) runs for real against Redis. Workers never call it."""
    ctx = context()
    previous, ctx.graph = ctx.graph, client
    return previous


class Request(CeleryRequest):
    """How a worker reads the task's message, whoever published it: celery-node's ``sendTask(name, [doc])`` sends
    ``kwargs: null`` (protocol 2), read as no keyword arguments so that its default call just works; and logs,
    events and Flower show only kind, recipient and account as the arguments, never the text. (Messages that
    never reach the task body end their job in :mod:`workers.raw`.)"""

    # Celery's private fields rewritten below (celery-types declares only the public ones): annotations only
    _args: Any
    _kwargs: dict[str, Any] | None
    _body: Any
    _decoded: bool
    _request_dict: dict[str, Any]
    _content_type: str | None
    _content_encoding: str | None

    def __init__(self, message: Any, **options: Any):
        super().__init__(message, **options)
        if self._kwargs is None:  # celery-node (protocol 2) sends null when the caller gave no kwargs
            embed = self._body[2] if self._decoded else message.payload[2]
            self._kwargs = self._request_dict["kwargs"] = {}
            self._body = (self._args, {}, embed)
            self._decoded = True
            self._content_type = self._content_encoding = None

    @property
    def argsrepr(self) -> str:
        return summarize_arguments(self._args)

    @property
    def kwargsrepr(self) -> str:
        return repr(sorted(self._kwargs)) if isinstance(self._kwargs, dict) and self._kwargs else "{}"


@app.task(name=TASK_NAME, bind=True, throws=(DeadLettered,), Request=Request)
def send_message(self: Task[..., Any], message: Any = None, *extra: Any, **unexpected: Any) -> dict[str, Any]:
    job_id = cast(str, self.request.id)  # a task being run always has its id
    if not tracing.on():
        return _send(context(), job_id, message, extra, unexpected)
    # The trace the job was queued in (its record keeps the producer's traceparent), and since when it waited.
    parent, created, due, attempts = context().redis.hmget(job_key(job_id), "traceparent", "created_at",
                                                           "next_attempt_at", "attempts")
    safe = message if isinstance(message, dict) else {}
    attributes = {"igsend.job_id": job_id, "igsend.account": str(safe.get("account") or ""),
                  "igsend.kind": str(safe.get("kind") or ""), "igsend.attempts_before": int(attempts or 0)}
    with tracing.span("igsend.send", parent=str(parent) if parent else None, attributes=attributes) as current:
        since = float(due or created or time.time())
        tracing.waited("igsend.wait", since, time.time(),
                       **{"igsend.waited_for": "retry back-off or its time" if due else "the queue"})
        try:
            result = _send(context(), job_id, message, extra, unexpected)
        except Ignore:
            status = context().redis.hget(job_key(job_id), "status")
            current.set_attribute("igsend.outcome", str(status or "done"))
            raise
        except DeadLettered as exc:
            current.set_attribute("igsend.outcome", str((exc.args[1] or {}).get("status", "dead")
                                                        if len(exc.args) > 1 else "dead"))
            tracing.failed(current, "dead-lettered")
            raise
        current.set_attribute("igsend.outcome", "delivered")
        current.set_attribute("igsend.attempt", int(result.get("attempts") or 0))
        return result


def _send(ctx: _Context, job_id: str, message: Any, extra: tuple[Any, ...] = (),
          unexpected: dict[str, Any] | None = None) -> dict[str, Any]:
    """One job, whole: validate, admit (lua/admit.lua), POST once, record. Returns what Flower shows as the task's
    result; raises Ignore (nothing more to do here) or DeadLettered."""
    try:
        if extra:
            raise InvalidMessage({"_schema": [f"igsend.send_message takes one argument, the message document "
                                              f"(got {1 + len(extra)})"]})
        if unexpected:
            raise InvalidMessage({name: ["is not an argument of igsend.send_message"] for name in unexpected})
        msg = load_message(message)
    except InvalidMessage as exc:
        _dead(ctx, job_id, f"invalid message: {exc}", None, None, raw=message)
    msg.pop("idempotency_key", None)
    try:
        account = get_account(msg["account"])
    except AccountError as exc:
        _dead(ctx, job_id, str(exc), None, None, raw=msg)
    if msg["kind"] in FACEBOOK_LOGIN_ONLY and account.login != "facebook":  # producers refuse it; raw clients may not
        _dead(ctx, job_id, f"{msg['kind']}: Meta offers it only to Facebook-Login accounts, and the account "
                           f"{account.name!r} uses Instagram Login", None, None, msg=msg)
    if staged(msg):
        msg = _uploaded(ctx, job_id, msg, account)
    send_class = SEND_CLASS[msg["kind"]]

    while True:
        admission = ctx.admitter.admit(job_id, msg, send_class, account.rate(send_class),
                                       lock_ttl=ctx.settings.lock_ttl(send_class))
        if admission.action is Action.GO:
            break
        if admission.action is Action.ORPHANED:
            if ctx.settings.unknown_outcome == "reconcile":
                return _reconcile_orphan(ctx, job_id, msg, account, send_class, admission.detail)
            ctx.outcomes.count("orphaned_total")
            if ctx.settings.unknown_outcome == "resend":
                ctx.outcomes.forget_inflight(job_id)
                continue
            _dead(ctx, job_id, "outcome unknown: a worker stopped while its POST was in flight; not resent",
                  None, None, status=JobStatus.UNKNOWN, msg=msg)
        if admission.action is Action.WINDOW_CLOSED:
            _, _, name = inbound.window_of(msg)
            opened = datetime.fromtimestamp(float(admission.detail), UTC).strftime("%Y-%m-%dT%H:%MZ")
            _dead(ctx, job_id, f"window closed: the {name} closed while the message waited (opened {opened})",
                  None, None, msg=msg)
        if admission.action is Action.UNREPLICATED:
            ctx.outcomes.unadmit(job_id, time.time() + UNREPLICATED_DELAY, reason=admission.detail)
            RETRIES.labels(msg["account"], "unreplicated").inc()
            log.info("not sent job=%s: %s", job_id, admission.detail)
        elif admission.action is Action.DONE:
            ctx.outcomes.count("skipped_redeliveries_total")
        elif admission.action is Action.PARKED:
            RATE_WAITS.labels(msg["account"], "parked").inc()
        elif admission.action is Action.WAITING:
            ORDER_WAITS.labels(msg["account"]).inc()
        raise Ignore()  # parked, held, deferred, early, busy, done: another copy or the scheduler has it

    posted = _post(ctx, job_id, msg, account, send_class, admission.attempt, admission.wait)
    return _conclude(ctx, job_id, msg, account, send_class, admission.attempt, admission.created_at, posted)


@dataclass
class _Posted:
    """One POST's answer, classified."""

    verdict: Verdict
    entry: dict[str, Any]
    started: float
    headers: dict[str, str]
    body: Any
    #: seconds from the POST to its answer (or to its failure)
    latency: float


def _post(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account, send_class: str, attempt: int,
          wait: float, *, log: bool = True) -> _Posted:
    """The one POST of an admitted attempt (after ``wait`` seconds: its rate slot), classified, counted, and logged
    (``log``; else the caller logs it with :func:`_log_attempt`)."""
    if wait > 0:
        RATE_WAITS.labels(msg["account"], "inline").inc()
        time.sleep(wait)
    started = time.time()
    headers: dict[str, str] = {}
    body: Any = None
    try:
        response = ctx.graph.send(account, graph_body(msg), deadline=ctx.settings.deadline(send_class))
    except requests.RequestException as exc:
        verdict = classify_transport(exc)
        latency = time.time() - started
    except Exception as exc:  # noqa: BLE001 - whatever it was, the POST may have gone out: never resend
        # Only the exception's type is kept: its text could hold what was being sent, token included.
        verdict = Verdict(Outcome.UNKNOWN, f"unexpected error while sending ({type(exc).__name__}); not resent")
        latency = time.time() - started
    else:
        headers, latency, body = response.headers, response.elapsed, response.body
        verdict = classify_answer(response.status, body, location=headers.get("Location"))
        _note_usage(ctx, msg["account"], headers)
    if verdict.outcome is Outcome.ACCOUNT_BROKEN and newer_token_from_file(account):
        # another process saw the new token file first and released the account: send again with that token
        TOKEN_RELOADS.labels(account.name).inc()
        verdict = Verdict(Outcome.TRANSIENT, "the token used was replaced in the account's token_file: sent again "
                                             "with the new one", verdict.http_status, verdict.code, verdict.subcode)
    verdict = verdict.scrubbed(ctx.secrets)

    entry = {"attempt": attempt, "at": started, "latency_ms": round(latency * 1000, 1),
             "outcome": verdict.outcome.value, **{k: v for k, v in verdict.error().items() if k != "class"}}
    ATTEMPTS.labels(msg["account"], msg["kind"], verdict.outcome.value, str(verdict.code or "")).inc()
    GRAPH_LATENCY.labels(msg["account"]).observe(latency)
    if log:
        _log_attempt(ctx, job_id, msg, attempt, verdict, latency)
    return _Posted(verdict, entry, started, headers, body, latency)


def _delivered_result(msg: dict[str, Any], body: Any) -> dict[str, Any]:
    result = {"recipient_id": body["recipient_id"]}
    if body.get("message_id"):
        result["message_id"] = body["message_id"]
    if "comment_id" in msg:
        result["comment_id"] = msg["comment_id"]
    return result


def _conclude(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account, send_class: str, attempt: int,
              created_at: float, posted: _Posted) -> dict[str, Any]:
    """Record what the POST came to. Returns the task's result for a delivery; raises Ignore or DeadLettered."""
    verdict, entry = posted.verdict, posted.entry
    if verdict.outcome is Outcome.DELIVERED:
        result = _delivered_result(msg, posted.body)
        _record_delivered(ctx, job_id, result, entry, forget=reset_keys(msg["account"]),
                          conversation=conversation_of(msg), account=msg["account"])
        FINISHED.labels(msg["account"], msg["kind"], "delivered").inc()
        # What Flower shows as the task's result: Meta's answer plus who/what/how many tries; no secrets.
        return {**result, "account": msg["account"], "kind": msg["kind"], "attempts": attempt}
    if verdict.outcome is Outcome.UNKNOWN and ctx.settings.unknown_outcome == "reconcile":
        return _reconcile(ctx, job_id, msg, account, send_class, verdict, entry, started=posted.started)
    _handle_failure(ctx, job_id, msg, verdict, entry, posted.headers, created_at)
    raise Ignore()


def _reconcile_orphan(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account, send_class: str,
                      attempt: str) -> dict[str, Any]:
    """An attempt's outcome was never recorded (a worker stopped while its POST was in flight), or its
    reconciliation was put off until now: reconcile it, holding the job's lock (one copy of the job does it;
    another one arriving meanwhile stands back)."""
    lock = lock_key(job_id)
    if not ctx.redis.set(lock, "1", nx=True, px=int(ctx.settings.lock_ttl(send_class) * 1000)):
        raise Ignore()  # another copy is reconciling it
    status, inflight, inflight_at, updated_at, lost_answer = ctx.redis.hmget(
        job_key(job_id), "status", "inflight", "inflight_at", "updated_at", "lost_answer")
    if status != JobStatus.SENDING.value or not inflight:  # finished, or let go, before this copy got the lock
        ctx.redis.delete(lock)
        raise Ignore()
    if not lost_answer:
        ctx.outcomes.count("orphaned_total")
    started = float(inflight_at or updated_at or time.time())
    verdict = Verdict(Outcome.UNKNOWN, str(lost_answer or "a worker stopped while its POST was in flight"))
    entry = {"attempt": int(attempt or inflight), "at": started, "latency_ms": None, "outcome": "unknown",
             "reason": verdict.reason}
    return _reconcile(ctx, job_id, msg, account, send_class, verdict, entry, started=started,
                      logged=bool(lost_answer))


def _reconcile(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account, send_class: str,
               verdict: Verdict, entry: dict[str, Any], *, started: float, logged: bool = False) -> dict[str, Any]:
    """IGSEND_UNKNOWN_OUTCOME=reconcile: ask Meta whether the attempt's message arrived (workers/reconcile.py).
    Found: delivered with Meta's message id. Not there after the horizon: sent again once, through admission.
    Cannot tell, or not there after the one resend: unknown, in the DLQ. Not yet (before the horizon, or no
    Conversations API slot soon): put off, holding no worker. ``logged``: the attempt's entry is in its log already
    (written when the reconciliation was first put off)."""
    found = ctx.reconciler.reconcile(ctx.graph, job_id, msg, account, started=started,
                                     deadline=ctx.settings.deadline(send_class))
    if found.found is Found.LATER and found.due is not None:
        ctx.outcomes.defer_reconcile(job_id, found.due, reason=f"reconciling a lost answer: {found.reason}",
                                     lost_answer=verdict.reason, started=started,
                                     attempt_entry=None if logged else entry)
        log.info("reconciling job=%s: %s; again in %.1f s", job_id, found.reason, found.due - time.time())
        raise Ignore()
    if logged:  # the log has the attempt's entry already: what follows is an event about it, as a republish is
        entry = {"attempt": entry["attempt"], "at": time.time(), "outcome": "reconciled", "reason": verdict.reason}
    if found.found is Found.DELIVERED and found.message_id:
        result = {"recipient_id": str(msg["recipient"]), "message_id": found.message_id}
        delivered = {**entry, "outcome": "delivered", "reconciled": f"{verdict.reason}; {found.reason}"}
        _record_delivered(ctx, job_id, result, delivered, forget=reset_keys(msg["account"]),
                          conversation=conversation_of(msg), account=msg["account"])
        _count_reconciled(ctx, msg, "delivered")
        FINISHED.labels(msg["account"], msg["kind"], "delivered").inc()
        log.info("reconciled job=%s: delivered (%s), message_id=%s", job_id, verdict.reason, found.message_id)
        return {**result, "account": msg["account"], "kind": msg["kind"], "attempts": entry["attempt"],
                "reconciled": True}
    resent = ctx.redis.hget(job_key(job_id), "resent")
    if found.found is Found.ABSENT and not resent:
        ctx.outcomes.resend(job_id, reason=f"{verdict.reason}; {found.reason}: sent again (once)",
                            attempt_entry={**entry, "reconciled": found.reason})
        _count_reconciled(ctx, msg, "resent")
        RETRIES.labels(msg["account"], "reconciled").inc()
        log.info("reconciled job=%s: not at Meta (%s), sent again", job_id, found.reason)
        raise Ignore()
    why = found.reason if found.found is Found.FAILED else \
        f"{found.reason}, and it was sent again once already after a lost answer: not sent a third time"
    ctx.outcomes.count("reconcile_failed_total")
    RECONCILED.labels(msg["account"], "unknown").inc()
    _dead(ctx, job_id, f"{Outcome.UNKNOWN.value}: {verdict.reason}; not reconciled: {why}", verdict.error(), entry,
          status=JobStatus.UNKNOWN, msg=msg)


def _count_reconciled(ctx: _Context, msg: dict[str, Any], result: str) -> None:
    """``igsend:stats``: ``reconciled_total`` (lost answers settled without an operator), split into
    ``reconciled_delivered_total`` and ``reconciled_resent_total``."""
    ctx.outcomes.count("reconciled_total")
    ctx.outcomes.count(f"reconciled_{result}_total")
    RECONCILED.labels(msg["account"], result).inc()


def _record_delivered(ctx: _Context, job_id: str, result: dict[str, Any], entry: dict[str, Any], *,
                      forget: list[str], conversation: str | None = None, account: str | None = None) -> None:
    """Write the delivered record until the replicas confirm it (IGSEND_REDIS_REPLICA_ACKS), through a failover.

    The POST went out: this worker alone knows Meta's answer, so it keeps trying (the write is idempotent) rather
    than let the message go back to the queue. If the record still is not confirmed after RECORD_PATIENCE, the
    message is acknowledged anyway: its confirmed admission means a copy redelivered after a lost record ends
    ``unknown``, never sent again."""
    give_up_at = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            ctx.outcomes.delivered(job_id, result, entry, forget=forget, conversation=conversation, account=account)
            return
        except (NotReplicated, redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            if time.monotonic() > give_up_at:
                ctx.outcomes.count("unconfirmed_deliveries_total")
                log.warning("delivered job=%s but its record is not confirmed (%s); a failover now could make it "
                            "unknown, never send it again", job_id, type(exc).__name__)
                return
            time.sleep(0.5)


def _uploaded(ctx: _Context, job_id: str, msg: dict[str, Any], account: Account) -> dict[str, Any]:
    """The message with its staged files uploaded (once per account and content; workers/uploads.py), or the job
    retried or dead-lettered as a failed POST would be."""
    if account.login != "facebook":  # producers refuse it; a raw client's message may still carry one
        _dead(ctx, job_id, f"a local file needs a Facebook-Login account: Meta documents no upload endpoint for "
                           f"Instagram Login (account {account.name!r}); send the file's public URL", None, None,
              msg=msg)
    started = time.time()
    try:
        return uploads.resolve(ctx.redis, ctx.graph, account, msg, deadline=ctx.settings.deadline("media"))
    except uploads.StagedFileGone as exc:
        _dead(ctx, job_id, str(exc), None, None, msg=msg)
    except uploads.UploadFailed as failed:
        verdict = failed.verdict.scrubbed(ctx.secrets)
        entry = {"at": started, "latency_ms": round(failed.latency * 1000, 1), "outcome": verdict.outcome.value,
                 "reason": f"upload: {verdict.reason}", **{k: v for k, v in verdict.error().items() if k != "class"}}
        created_at = float(ctx.redis.hget(job_key(job_id), "created_at") or started)
        _handle_failure(ctx, job_id, msg, verdict, entry, failed.headers, created_at)
        raise Ignore() from None


def _handle_failure(ctx: _Context, job_id: str, msg: dict[str, Any], verdict: Verdict, entry: dict[str, Any],
                    headers: dict[str, str], created_at: float) -> None:
    outcome = verdict.outcome
    if outcome is Outcome.THROTTLED:
        wait = throttle_wait(retry_after(headers), read_usage(headers).regain_seconds)
        until = time.time() + wait
        if verdict.app_wide:  # code 4: the app's limit, shared by every account of the app
            app_id = get_account(msg["account"]).app_id
            for name in {msg["account"], *(a.name for a in accounts_of_app(app_id))}:
                account_state.pause(name, until, f"app {app_id} throttled by Meta (code 4, answered to "
                                                 f"{msg['account']})", client=ctx.redis)
        else:
            account_state.pause(msg["account"], until, f"throttled by Meta (code {verdict.code})", client=ctx.redis)
        ctx.outcomes.retry(job_id, until, reason=verdict.reason, error=verdict.error(), attempt_entry=entry,
                           count_failure=False, throttled_on=msg["account"])
        RETRIES.labels(msg["account"], "throttled").inc()
        return
    if outcome is Outcome.UNKNOWN and ctx.settings.unknown_outcome == "resend":
        outcome = Outcome.TRANSIENT
    if outcome is Outcome.TRANSIENT:
        failures = ctx.outcomes.failures(job_id) + 1
        reason = ctx.policy.give_up(failures, time.time() - created_at, bounded=verdict.bounded)
        if reason is None:
            ctx.outcomes.retry(job_id, time.time() + ctx.policy.backoff(failures), reason=verdict.reason,
                               error=verdict.error(), attempt_entry=entry)
            RETRIES.labels(msg["account"], verdict.outcome.value).inc()
            return
        _dead(ctx, job_id, f"{reason}; last error: {verdict.reason}", verdict.error(), entry, msg=msg)
    if outcome is Outcome.ACCOUNT_BROKEN:
        account_state.mark_broken(msg["account"], verdict.reason, verdict.error(), client=ctx.redis)
    if outcome is Outcome.PERMANENT and verdict.suspect:
        tripped = ctx.breaker.count(msg["account"], verdict.signature, recipient_of(msg), job_id)
        if tripped:
            reason = (f"circuit breaker: the same error for {len(tripped)} different recipients in a row "
                      f"({verdict.code}/{verdict.subcode}: {verdict.message or verdict.reason}); the account's "
                      "setup, not the people: held until `igsend accounts heal`")
            account_state.mark_broken(msg["account"], reason, verdict.error(), client=ctx.redis)
            ctx.outcomes.record_attempt(job_id, entry)
            ctx.outcomes.hold(msg["account"], [job_id, *[j for j in tripped if j != job_id]], reason)
            FINISHED.labels(msg["account"], msg["kind"], "held").inc()
            return
    status = JobStatus.UNKNOWN if outcome is Outcome.UNKNOWN else JobStatus.DEAD
    _dead(ctx, job_id, f"{outcome.value}: {verdict.reason}", verdict.error(), entry, status=status, msg=msg)


def _dead(ctx: _Context, job_id: str, reason: str, error: dict[str, Any] | None, entry: dict[str, Any] | None,
          *, status: JobStatus = JobStatus.DEAD, raw: Any = None, msg: dict[str, Any] | None = None) -> NoReturn:
    """Finish the job as dead/unknown, file it in the DLQ, and fail the Celery task with the reason."""
    defaults = None
    if raw is not None:
        document = raw if isinstance(raw, dict) else {"value": raw}
        text = json.dumps(document, ensure_ascii=False, default=repr)
        defaults = {"message": json.loads(text) if len(text) <= MAX_DLQ_DOCUMENT else {"truncated": text[:2000]}}
        for field in ("kind", "account", "recipient"):
            value = document.get(field)
            defaults[field] = value[:100] if isinstance(value, str) else ""
    conversation = conversation_of(msg) if msg else None
    if conversation and status is JobStatus.DEAD and ctx.settings.ordered_dead == "hold":
        reason += (f"; its ordered conversation waits until `igsend dlq replay {job_id}` or "
                   f"`igsend dlq release {job_id}`")
        conversation = None
        HELD_CONVERSATIONS.labels(msg["account"] if msg else "invalid").inc()
    ctx.outcomes.dead(job_id, reason, error, entry, status=status, defaults=defaults, conversation=conversation)
    # Labels only from what igsend knows: a caller's invalid document must not mint new time series.
    account = msg["account"] if msg and msg.get("account") in registry() else "invalid"
    kind = msg["kind"] if msg else "invalid"
    FINISHED.labels(account, kind, status.value).inc()
    log.warning("dead-lettered job=%s status=%s reason=%s", job_id, status.value, reason)
    error = error or {}
    graph = (f" (Graph error {error['code']}" + (f"/{error['subcode']}" if error.get("subcode") is not None else "")
             + ")") if error.get("code") is not None else ""
    raise DeadLettered(f"{status.value}: {reason}{graph}", {
        "status": status.value, "reason": reason,
        **{key: error.get(key) for key in ("code", "subcode", "message", "fbtrace_id", "http_status", "class")}})


def _note_usage(ctx: _Context, account: str, headers: dict[str, str]) -> None:
    factor = read_usage(headers).factor
    if ctx.slowdown.get(account, 1.0) != factor:
        ctx.slowdown[account] = factor
        account_state.slow_down(account, factor, client=ctx.redis)


def _log_attempt(ctx: _Context, job_id: str, msg: dict[str, Any], attempt: int, verdict: Verdict,
                 latency: float) -> None:
    """One line per POST; with IGSEND_LOG_FORMAT=json, one JSON object per line for log pipelines."""
    if ctx.settings.log_format == "json":
        log.info(json.dumps({"event": "send_attempt", "job_id": job_id, "account": msg["account"],
                             "kind": msg["kind"], "attempt": attempt, "status": verdict.outcome.value,
                             "http_status": verdict.http_status, "graph_code": verdict.code,
                             "graph_subcode": verdict.subcode, "latency_ms": round(latency * 1000, 1)}))
    else:
        log.info("send job=%s account=%s kind=%s attempt=%s outcome=%s code=%s latency_ms=%.0f", job_id,
                 msg["account"], msg["kind"], attempt, verdict.outcome.value, verdict.code, latency * 1000)
