"""What people wrote to the accounts, as Meta's webhooks report it: when each person last wrote to each account
(the 24-hour window), when each comment was made (private replies), the capped stream ``igsend:inbound`` that
other apps read (each event once: ids seen in the last 3 days are dropped), and the inbox of webhook deliveries
not yet processed into it.

One small key per person and per comment, each expiring after :data:`REMEMBER_SECONDS` (past the longest window,
7 days with ``HUMAN_AGENT``), so what igsend remembers never grows beyond the people active in the last week.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from igsend.core.store import PREFIX

#: The stream of inbound events, capped like ``igsend:outcomes``.
INBOUND_KEY = f"{PREFIX}inbound"
#: About how many events the stream keeps (XADD MAXLEN ~).
INBOUND_MAX = 100_000
#: Webhook deliveries as received (the raw body), kept until they are processed into :data:`INBOUND_KEY`.
INBOX_KEY = f"{PREFIX}webhook-inbox"
#: How long an event id is remembered to drop Meta's retries of it (Meta retries for 36 hours).
SEEN_SECONDS = 3 * 24 * 3600
#: How long a person's last message and a comment's time are remembered: past every window.
REMEMBER_SECONDS = 8 * 24 * 3600
#: The windows ("Your app has 24 hours to respond"; HUMAN_AGENT: 7 days for a person's reply).
WINDOW_SECONDS = 24 * 3600
HUMAN_AGENT_WINDOW_SECONDS = 7 * 24 * 3600
#: Meta takes a private reply within 7 days of the comment.
PRIVATE_REPLY_SECONDS = 7 * 24 * 3600

# KEYS: the key. ARGV: unix seconds, ttl. Keeps the later of the stored time and this one (webhooks arrive late,
# retried and out of order).
_LATER = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > stored then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


# KEYS: the event's seen key, the stream. ARGV: seen ttl, stream cap, then field, value, ... Appends the event
# unless its id was seen: the check and the append are one step, so a retry after a crash neither loses nor
# repeats it.
_APPEND = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
end
redis.call(unpack(args))
return 1
"""


def seen_key(event_id: str) -> str:
    """Set once an event is in the stream, so Meta's retries of it are dropped."""
    return f"{PREFIX}inbound-seen:{event_id}"


def append_event(client: redis.Redis | redis.client.Pipeline, event_id: str, fields: Mapping[str, str]) -> None:
    """Add an event to :data:`INBOUND_KEY` unless an event with this id was added in the last
    :data:`SEEN_SECONDS` (the script answers 1 when added, 0 when dropped)."""
    flat = [part for pair in fields.items() for part in pair]
    client.eval(_APPEND, 2, seen_key(event_id), INBOUND_KEY, SEEN_SECONDS, INBOUND_MAX, *flat)


def last_wrote_key(account: str, person: str) -> str:
    """When ``person`` (an IGSID) last wrote to ``account`` (an igsend account name): Unix seconds."""
    return f"{PREFIX}lastwrote:{account}:{person}"


def comment_key(account: str, comment_id: str) -> str:
    """When a comment on one of ``account``'s posts was made: Unix seconds."""
    return f"{PREFIX}comment:{account}:{comment_id}"


def window_seconds(tag: str | None) -> int:
    return HUMAN_AGENT_WINDOW_SECONDS if tag == "HUMAN_AGENT" else WINDOW_SECONDS


def note_user_message(client: redis.Redis | redis.client.Pipeline, account: str, person: str, at: float) -> None:
    """A person wrote (a message, a postback, a quick-reply tap, a referral): the window opens again from ``at``."""
    _later(client, last_wrote_key(account, person), at)


def note_comment(client: redis.Redis | redis.client.Pipeline, account: str, comment_id: str, at: float) -> None:
    _later(client, comment_key(account, comment_id), at)


def _later(client: redis.Redis | redis.client.Pipeline, key: str, at: float) -> None:
    client.eval(_LATER, 1, key, f"{at:.3f}", REMEMBER_SECONDS)


def last_user_message(client: redis.Redis, account: str, person: str) -> float | None:
    """When the person last wrote to the account, if a webhook said so in the last week."""
    value = client.get(last_wrote_key(account, person))
    return float(value) if value else None


def comment_time(client: redis.Redis, account: str, comment_id: str) -> float | None:
    value = client.get(comment_key(account, comment_id))
    return float(value) if value else None


def window_of(message: dict[str, Any]) -> tuple[str, int, str]:
    """For a validated message: the key holding the moment its window opened (the person's last message, or the
    comment a private reply answers), how long the window lasts, and what to call it."""
    if message["kind"] == "private_reply":
        key = comment_key(message["account"], message["comment_id"])
        return key, PRIVATE_REPLY_SECONDS, "7-day private-reply window"
    seconds = window_seconds(message.get("tag"))
    name = "7-day HUMAN_AGENT window" if seconds == HUMAN_AGENT_WINDOW_SECONDS else "24-hour window"
    return last_wrote_key(message["account"], message["recipient"]), seconds, name


def outside_window(message: dict[str, Any], opened: float | None, now: float) -> tuple[str, str] | None:
    """Why ``message`` may not be sent (the field and the rule), or None. ``opened``: when its window opened, as
    remembered from a webhook; the caller's ``last_user_message_at`` counts too (the later of the two). Nothing
    known: igsend sends and Meta decides."""
    opened = max(filter(None, (opened, message.get("last_user_message_at"))), default=None)
    if opened is None:
        return None
    _, seconds, name = window_of(message)
    closes = opened + seconds
    field, what = ("comment_id", "comment") if message["kind"] == "private_reply" else ("recipient", "last message")
    send_at = message.get("send_at")
    if send_at is not None and send_at > now and send_at >= closes:
        return field, (f"send_at {_iso(send_at)} is after the {name} closes ({_iso(closes)}; {what} "
                       f"{_iso(opened)})")
    if now >= closes:
        return field, f"outside the {name} ({what} {_iso(opened)})"
    return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")
