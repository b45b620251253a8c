"""The Conversations API over what the sandbox accepted: the threads, their messages, and the API's own budget.

Written from Meta's "Conversations API" pages (Instagram Platform and Messenger Platform, as summarised in
GRAPH_API_NOTES.md "Conversations API"):

- ``GET /{version}/{account}/conversations?platform=instagram[&user_id=IGSID]`` answers
  ``{"data": [{"id", "updated_time"}]}``, the most recently updated first; ``user_id`` keeps the one conversation
  with that person (``data`` is empty when there is none). ``platform=instagram`` is required.
- ``GET /{version}/{conversation-id}?fields=messages`` answers ``{"messages": {"data": [{"id", "created_time"}]},
  "id"}``, newest first; nested fields ``fields=messages{id,created_time,from,to,message}`` (any of those) give
  each message's details in the same call.
- ``GET /{version}/{message-id}?fields=id,created_time,from,to,message`` answers one message (``id`` and
  ``created_time`` when ``fields`` is left out).

Only the **20 most recent** messages of a conversation are listed, and only they can be read by id: an older one
answers code 100, as Meta answers for a message it no longer shows. ``created_time`` is Meta's ISO 8601 with
whole seconds, ``2026-12-04T10:00:00+0000``; ``from`` is ``{"username", "id"}`` (the business's account for what
it sent), ``to`` is ``{"data": [{"username", "id"}]}``; ``message`` is the text, ``""`` for a message without text
(an attachment, a sticker, a template). In the sandbox nobody writes back: a conversation holds what the
business sent (reactions and sender actions create no message, as at Meta).

Budget: **2 calls/s per account** (every call above, counted for the account that owns the conversation), a token
bucket holding one second; above it ``613`` with Retry-After, Meta's "Calls to this api have exceeded the rate
limit". This module keeps the data and the budget; ``sandbox.lookups`` authenticates, ``sandbox.server`` routes.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import GraphError
from sandbox.limits import Bucket

RECENT = 20  # "you can only get details about the 20 most recent messages in the conversation"
CALLS_PER_SECOND = 2.0  # the Conversations API's budget per account
MESSAGE_FIELDS = ("id", "created_time", "from", "to", "message")
DEFAULT_MESSAGE_FIELDS = ("id", "created_time")
# Instagram conversation ids are base64 text starting like this ("ig_d..:1:IGMessageThread:"); the rest is a
# digest of the account and the person, so the same pair always has the same id.
THREAD_PREFIX = "aWdfZAG06MTpJR01lc3NhZA2VUaHJlYWQ6"
_NESTED = re.compile(r"messages(?:\.limit\(\d+\))?\{([^{}]*)\}")


def created_time(at: float) -> str:
    """Meta's timestamp format: ISO 8601, whole seconds, UTC written ``+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(at))


def _person(user_id: str) -> dict[str, str]:
    return {"username": f"user_{user_id[-6:]}", "id": user_id}


@dataclass
class Message:
    id: str
    account: str
    recipient: str
    at: float
    text: str

    def shown(self, fields: tuple[str, ...]) -> dict[str, Any]:
        values = {"id": self.id, "created_time": created_time(self.at),
                  "from": {"username": f"business_{self.account[-6:]}", "id": self.account},
                  "to": {"data": [_person(self.recipient)]}, "message": self.text}
        return {name: values[name] for name in fields}


@dataclass
class Thread:
    id: str
    account: str
    recipient: str
    messages: list[Message] = field(default_factory=list)  # oldest first

    def recent(self) -> list[Message]:
        """The messages Meta shows: the 20 most recent, newest first."""
        return self.messages[-RECENT:][::-1]


def _message_fields(value: str, where: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in MESSAGE_FIELDS]
    if unknown:
        raise GraphError(100, f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type ({where})")
    return names or DEFAULT_MESSAGE_FIELDS


class Conversations:
    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.by_pair: dict[tuple[str, str], Thread] = {}
        self.messages: dict[str, Message] = {}
        self.buckets: dict[str, Bucket] = {}

    def add(self, account: str, recipient: str, message_id: str, body: Mapping[str, Any], at: float) -> None:
        """A message the sandbox accepted, in the conversation of ``account`` with ``recipient``."""
        thread = self.by_pair.get((account, recipient))
        if thread is None:
            digest = hashlib.sha256(f"{account}:{recipient}".encode()).hexdigest()[:32]
            thread = self.threads[THREAD_PREFIX + digest] = self.by_pair[(account, recipient)] = \
                Thread(THREAD_PREFIX + digest, account, recipient)
        content = body.get("message")
        text = content.get("text") if isinstance(content, dict) else None
        message = Message(message_id, account, recipient, at, text if isinstance(text, str) else "")
        thread.messages.append(message)
        self.messages[message_id] = message

    def serves(self, segments: list[str]) -> bool:
        """Whether a GET of this path (version taken off) is the Conversations API's."""
        return ((len(segments) == 2 and segments[1] == "conversations")
                or (len(segments) == 1 and (segments[0] in self.threads or segments[0] in self.messages)))

    def owner(self, segments: list[str]) -> str | None:
        """The account a conversation or message id belongs to (None for the ``conversations`` edge)."""
        if len(segments) != 1:
            return None
        node = self.threads.get(segments[0]) or self.messages.get(segments[0])
        return node.account if node else None

    def used_percent(self, account: str) -> int:
        bucket = self.buckets.get(account)
        return bucket.used_percent() if bucket else 0

    def read(self, account: str, segments: list[str], query: Mapping[str, str]) -> dict[str, Any]:
        """The answer to one authenticated GET by ``account``'s token; raises GraphError."""
        bucket = self.buckets.setdefault(account, Bucket(CALLS_PER_SECOND))
        wait = bucket.take()
        if wait:
            raise GraphError(613, "(#613) Calls to this api have exceeded the rate limit. (Conversations API: "
                                  f"{CALLS_PER_SECOND:g} calls per second per account)", retry_after=wait)
        if len(segments) == 2:
            return self._list(account, query)
        node = segments[0]
        if node in self.threads:
            return self._thread(self.threads[node], query.get("fields", ""))
        return self._message(self.messages[node], query.get("fields", ""))

    def _list(self, account: str, query: Mapping[str, str]) -> dict[str, Any]:
        if query.get("platform", "").lower() != "instagram":
            raise GraphError(100, "(#100) The parameter platform is required: platform=instagram lists the "
                                  "account's Instagram conversations")
        user_id = query.get("user_id")
        threads = [t for t in self.threads.values() if t.account == account and t.messages
                   and (user_id is None or t.recipient == user_id)]
        threads.sort(key=lambda t: t.messages[-1].at, reverse=True)
        return {"data": [{"id": t.id, "updated_time": created_time(t.messages[-1].at)} for t in threads]}

    def _thread(self, thread: Thread, fields: str) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for part in _split_fields(fields):
            nested = _NESTED.fullmatch(part)
            if part in ("messages", "messages.limit(20)") or nested:
                names = _message_fields(nested.group(1), "Message") if nested else DEFAULT_MESSAGE_FIELDS
                answer["messages"] = {"data": [m.shown(names) for m in thread.recent()]}
            elif part == "updated_time":
                answer["updated_time"] = created_time(thread.messages[-1].at)
            elif part != "id":
                raise GraphError(100, f"(#100) Tried accessing nonexisting field ({part}) on node type "
                                      "(Conversation)")
        answer["id"] = thread.id
        return answer

    def _message(self, message: Message, fields: str) -> dict[str, Any]:
        thread = self.by_pair[(message.account, message.recipient)]
        if message not in thread.recent():
            raise GraphError(100, f"(#100) Message {message.id} cannot be read: only the {RECENT} most recent "
                                  "messages of a conversation can be")
        return message.shown(_message_fields(fields, "Message"))


def _split_fields(fields: str) -> list[str]:
    """``a,messages{b,c},d`` -> ``["a", "messages{b,c}", "d"]`` (commas inside braces stay)."""
    parts, depth, current = [], 0, ""
    for char in fields:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    parts.append(current.strip())
    return [part for part in parts if part]
