"""Reconciling lost answers (``IGSEND_UNKNOWN_OUTCOME=reconcile``, the default): when a POST's answer was lost, ask
Meta's Conversations API whether the message arrived, instead of leaving the job ``unknown``.

What is asked (GRAPH_API_NOTES.md, "Conversations API"): ``GET /{version}/{account}/conversations?platform=instagram
&user_id=IGSID``, then ``GET /{version}/{conversation}?fields=messages{id,created_time,from,to,message}``: the
conversation's 20 most recent messages. At most 2 calls/s per account (``BUDGETS["conversations"]``), booked in
Redis like the send slots (GCRA, on Redis's clock, shared by every worker).

The match (:func:`candidates`, a pure function): a message **from the business** (``from`` is not the person and
``to`` names the person) whose text is the job's, created within ``[attempt start - WINDOW_BEFORE, horizon +
CLOCK_SKEW]``. The first of them, oldest first, that no other job has claimed is the job's: the worker claims it
(in the account's index of sent message ids, :mod:`igsend.core.sent`) in the same step as it checks. Every
delivery claims its own message id there when it is recorded, so a message another job sent (the same "Thanks!"
a moment earlier) is never taken for this one; one sent yesterday is older than the window.

The horizon: the attempt's start + its POST's deadline + :data:`GRACE` seconds. Meta may still be working on a
POST whose connection died, so absence before it proves nothing: the worker asks at once (a hang usually shows
the message already), and if it is not there, asks once more at the horizon. Nothing there then: the job is sent
again, once, through admission like a retry (``resent`` on its record); a second lost answer after that ends
``unknown``.

Waiting holds no worker thread: for a horizon more than :data:`MAX_INLINE_WAIT` seconds away, or a Conversations
API slot more than that ahead (a burst of lost answers on one account), the answer is :attr:`Found.LATER` with a
time, and the job waits in ``igsend:delayed`` still ``sending`` with its attempt in flight, so the copy the
scheduler brings back is admitted only to reconcile (``ORPHANED``), never to POST.

What stays ``unknown`` (in the DLQ, as before): kinds the conversation cannot be compared on (attachments,
stickers, posts, templates, reactions, sender actions), private replies (found by comment, not by IGSID), any
refusal or error of the Conversations API (a missing permission, a throttle, no answer), a busy conversation
whose 20 most recent messages do not reach back to the attempt, and an attempt older than :data:`MAX_AGE` (the
claims of others' messages may be gone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis
import requests

from igsend.core import sent
from igsend.core.settings import DEADLINE_MARGIN
from igsend.core.store import limiter_key, lock_key
from schemas import graph_body
from workers.accounts import Account
from workers.graph import GraphClient

#: Seconds after the POST's deadline that Meta may still take to show a message whose answer was lost.
GRACE = 5.0
#: Seconds Meta's clock and this worker's may disagree by.
CLOCK_SKEW = 2.0
#: How far before the attempt's start a message may seem to be created: the skew, plus one second because Meta's
#: created_time has whole seconds.
WINDOW_BEFORE = CLOCK_SKEW + 1.0
#: Meta shows the 20 most recent messages of a conversation.
RECENT = 20
#: Total seconds one Conversations API call may take.
GET_DEADLINE = 5.0
#: Seconds a reconciliation waits in place, for the horizon or a Conversations API slot; a longer wait is
#: Found.LATER: the job waits in igsend:delayed instead, holding no worker thread.
MAX_INLINE_WAIT = 2.0
#: Attempts older than this are not reconciled: the claims that keep other jobs' messages apart are kept at least
#: sent.MIN_KEEP seconds.
MAX_AGE = sent.MIN_KEEP - 60.0
CONVERSATIONS = "conversations"  # the budget's class in workers.accounts.BUDGETS
MESSAGE_FIELDS = "messages{id,created_time,from,to,message}"

# GCRA without burst, as admission's (igsend/core/lua/admit.lua): the next call's slot, 1/rate after the previous
# one. KEYS: the limiter. ARGV: rate, max wait. Returns the wait in seconds; beyond the max wait, nothing is booked
# and the answer is the wait, negated.
_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tonumber(ARGV[2]) then return string.format('%.6f', now - tat) end
local next_tat = tat + 1 / tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 60000)
return string.format('%.6f', tat - now)
"""
# The first candidate no other job holds becomes this job's. KEYS: the account's sent-id hashes that may hold a
# claim, this hour's first (where a claim goes). ARGV: the job's id (compact), that hash's ttl, then the
# candidates' digests, oldest first. Returns the 1-based index of the one claimed (or already this job's), 0 for none.
_CLAIM = """
for i = 3, #ARGV do
  local taken = false
  for _, key in ipairs(KEYS) do
    local owner = redis.call('HGET', key, ARGV[i])
    if owner == ARGV[1] then return i - 2 end
    if owner then taken = true break end
  end
  if not taken then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return i - 2
  end
end
return 0
"""


class Found(StrEnum):
    DELIVERED = "delivered"  # Meta shows the message: ``message_id`` is its id
    ABSENT = "absent"  # not there after the horizon: it may be sent again
    FAILED = "failed"  # cannot tell: the job stays unknown
    LATER = "later"  # ask again at ``due`` (the horizon, or the next Conversations API slot)


@dataclass(frozen=True)
class Reconciliation:
    found: Found
    reason: str
    message_id: str | None = None
    due: float | None = None


class _CannotTell(Exception):
    pass


class _Later(Exception):
    def __init__(self, due: float, reason: str):
        super().__init__(reason)
        self.due = due


# --- the matching rule (pure) ---------------------------------------------------------------------------------


def comparable_text(message: dict[str, Any]) -> str | None:
    """The text a conversation shows for this message, or None when it cannot be compared: a private reply, or a
    kind whose message has no text of its own (attachments, stickers, posts, templates, reactions, actions)."""
    if "comment_id" in message or message.get("kind") not in ("text", "link", "quick_replies"):
        return None
    text = graph_body(message)["message"].get("text")  # these kinds' message object is {"text": ...} and more
    return text if isinstance(text, str) and text.strip() else None


def created_at(value: Any) -> float | None:
    """Meta's ``created_time`` (``2026-12-04T10:00:00+0000``) as Unix seconds; None when it is not one."""
    if not isinstance(value, str):
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value, layout).timestamp()
        except ValueError:
            continue
    return None


def candidates(messages: list[Any], *, text: str, recipient: str, since: float, until: float) -> list[str]:
    """Ids of the messages that may be this attempt's, oldest first: from the business to ``recipient``, with the
    same text (surrounding white space aside), created within ``[since, until]``."""
    found: list[tuple[float, str]] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            continue
        sender, to = message.get("from"), message.get("to")
        sender = sender if isinstance(sender, dict) else {}
        to = to if isinstance(to, dict) else {}
        people = [p.get("id") for p in to.get("data") or [] if isinstance(p, dict)]
        if str(sender.get("id")) == recipient or recipient not in [str(p) for p in people]:
            continue  # the person's own message, or one to someone else
        body = message.get("message")
        at = created_at(message.get("created_time"))
        if isinstance(body, str) and body.strip() == text.strip() and at is not None and since <= at <= until:
            found.append((at, message["id"]))
    return [message_id for _, message_id in sorted(found)]


def reaches_back(messages: list[Any], since: float) -> bool:
    """Whether the messages shown are the whole conversation since ``since``: fewer than Meta's 20, or the oldest
    of them created before it. If not, this attempt's message may have been pushed out of sight."""
    if len(messages) < RECENT:
        return True
    times = [created_at(m.get("created_time")) for m in messages if isinstance(m, dict)]
    return any(at is not None and at < since for at in times)


# --- asking Meta ------------------------------------------------------------------------------------------------


class Reconciler:
    """Asks the Conversations API for one job at a time. ``redact`` blanks tokens out of Meta's error text."""

    def __init__(self, client: redis.Redis, *, redact: Callable[[str], str] = lambda text: text,
                 grace: float = GRACE, sleep: Callable[[float], None] = time.sleep, delivered_ttl: int = 24 * 3600):
        self.client = client
        self.keep = sent.keep_seconds(delivered_ttl)
        self.redact = redact
        self.grace = grace
        self.sleep = sleep
        self._slot = client.register_script(_SLOT)
        self._claim = client.register_script(_CLAIM)

    def reconcile(self, graph: GraphClient, job_id: str, message: dict[str, Any], account: Account, *,
                  started: float, deadline: float) -> Reconciliation:
        """Whether the attempt that began at ``started`` (a POST of ``deadline`` seconds at most) reached Meta.

        The caller holds the job's lock; it is extended for as long as this takes (a few seconds at most)."""
        if "comment_id" in message:
            return Reconciliation(Found.FAILED, "a private reply: the Conversations API finds conversations by "
                                                "the person's IGSID, not by the comment")
        text = comparable_text(message)
        if text is None:
            return Reconciliation(Found.FAILED, f"a {message['kind']} message cannot be compared: the "
                                                "conversation shows no text of its own for it")
        age = time.time() - started
        if age > MAX_AGE:
            return Reconciliation(Found.FAILED, f"the attempt began {age:.0f} s ago, more than {MAX_AGE:.0f} s: "
                                                "too old to tell it from other jobs' messages")
        horizon = started + deadline + self.grace
        since, until = started - WINDOW_BEFORE, horizon + CLOCK_SKEW
        recipient = str(message["recipient"])
        conversation: str | None = None
        try:
            while True:
                conversation, messages, asked_at = self._messages(graph, job_id, account, recipient,
                                                                    conversation)
                ids = candidates(messages, text=text, recipient=recipient, since=since, until=until)
                mine = self._claim_first(job_id, account, ids)
                if mine is not None:
                    return Reconciliation(Found.DELIVERED, "found at Meta by the Conversations API", mine)
                if not reaches_back(messages, since):
                    return Reconciliation(Found.FAILED, f"the conversation's {RECENT} most recent messages do "
                                                        "not reach back to the attempt")
                if asked_at >= horizon:
                    return Reconciliation(Found.ABSENT, f"not in the conversation {asked_at - started:.1f} s "
                                                        f"after the attempt began (its deadline {deadline:g} s "
                                                        f"+ {self.grace:g} s)")
                if horizon - time.time() > MAX_INLINE_WAIT:
                    return Reconciliation(Found.LATER, "not in the conversation yet: asked again at the horizon",
                                          due=horizon)
                self._hold(job_id, horizon - time.time() + MAX_INLINE_WAIT + GET_DEADLINE)
                self.sleep(max(0.0, horizon - time.time()))
        except _CannotTell as exc:
            return Reconciliation(Found.FAILED, str(exc))
        except _Later as later:
            return Reconciliation(Found.LATER, str(later), due=later.due)

    def _messages(self, graph: GraphClient, job_id: str, account: Account, recipient: str,
                  conversation: str | None) -> tuple[str | None, list[Any], float]:
        """The conversation's id, its messages as Meta shows them, and when they were asked for."""
        if conversation is None:
            asked_at = time.time()
            listed = self._get(graph, job_id, account, f"{account.id}/conversations",
                               {"platform": "instagram", "user_id": recipient})
            data = listed.get("data")
            if not isinstance(data, list):
                raise _CannotTell("the Conversations API answered without a list of conversations")
            if not data:
                return None, [], asked_at  # no conversation with the person: nothing was delivered to them
            if not isinstance(data[0], dict) or not isinstance(data[0].get("id"), str):
                raise _CannotTell("the Conversations API answered a conversation without an id")
            conversation = str(data[0]["id"])
        asked_at = time.time()
        answer = self._get(graph, job_id, account, conversation, {"fields": MESSAGE_FIELDS})
        edge = answer.get("messages", {"data": []})
        messages = edge.get("data") if isinstance(edge, dict) else None
        if not isinstance(messages, list):
            raise _CannotTell("the Conversations API answered a conversation without its messages")
        return conversation, messages, asked_at

    def _get(self, graph: GraphClient, job_id: str, account: Account, path: str,
             params: dict[str, str]) -> dict[str, Any]:
        wait = float(self._slot(keys=[limiter_key(account.name, CONVERSATIONS)],
                                args=[account.rate(CONVERSATIONS), MAX_INLINE_WAIT]))
        if wait < 0:
            raise _Later(time.time() - wait, f"the Conversations API budget ({account.rate(CONVERSATIONS):g} "
                                             f"calls/s) is booked {-wait:.1f} s ahead")
        self._hold(job_id, wait + GET_DEADLINE)
        if wait > 0:
            self.sleep(wait)
        try:
            response = graph.get(account, path, params, deadline=GET_DEADLINE)
        except requests.RequestException as exc:
            raise _CannotTell(f"no answer from the Conversations API ({type(exc).__name__})") from None
        except Exception as exc:  # noqa: BLE001 - a GET changes nothing at Meta: whatever failed, the job stays unknown
            raise _CannotTell(f"the Conversations API call failed ({type(exc).__name__})") from None
        body = response.body
        error = body.get("error") if isinstance(body, dict) else None
        if response.status != 200 or not isinstance(body, dict) or error is not None:
            detail = ""
            if isinstance(error, dict):
                code = error.get("code")
                subcode = f"/{error['error_subcode']}" if error.get("error_subcode") is not None else ""
                detail = f" (Graph error {code}{subcode}: {self.redact(str(error.get('message') or ''))[:200]})"
            raise _CannotTell(f"the Conversations API answered HTTP {response.status}{detail}")
        return body

    def _claim_first(self, job_id: str, account: Account, ids: list[str]) -> str | None:
        """The first of ``ids`` no other job holds, now this job's; None when there is none (or no id at all)."""
        if not ids:
            return None  # no candidate: nothing to ask Redis
        index = int(self._claim(keys=sent.recent_keys(account.name, within=MAX_AGE + CLOCK_SKEW),
                                args=[sent.compact_job_id(job_id), self.keep, *map(sent.digest, ids)]))
        return ids[index - 1] if index else None

    def _hold(self, job_id: str, seconds: float) -> None:
        """Keep the job's lock for ``seconds`` more (and the margin): no copy of the job starts meanwhile."""
        self.client.pexpire(lock_key(job_id), int((max(0.0, seconds) + DEADLINE_MARGIN) * 1000))
