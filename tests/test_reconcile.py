"""Reconciling lost answers: the matching rule as pure functions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from workers.reconcile import CLOCK_SKEW, WINDOW_BEFORE, candidates, comparable_text, created_at, reaches_back

# --- the matching rule ---------------------------------------------------------------------------------------

BUSINESS, PERSON = "17841400000000001", "5551234"
T0 = 1_796_378_400.0  # 2026-12-04T10:00:00+0000


def shown(mid: str, text: str, at: float, *, sender: str = BUSINESS, to: str = PERSON) -> dict[str, Any]:
    """A message as the Conversations API shows it."""
    return {"id": mid, "created_time": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(at)),
            "from": {"username": "shop", "id": sender}, "to": {"data": [{"username": "someone", "id": to}]},
            "message": text}


def test_created_time_is_read_as_meta_writes_it() -> None:
    assert created_at("2026-12-04T10:00:00+0000") == T0
    assert created_at("2026-12-04T11:00:00+0100") == T0
    assert created_at("yesterday") is None and created_at(None) is None


@pytest.mark.parametrize("document,text", [
    ({"kind": "text", "recipient": PERSON, "text": "Thanks!"}, "Thanks!"),
    ({"kind": "link", "recipient": PERSON, "url": "https://example.com/a"}, "https://example.com/a"),
    ({"kind": "quick_replies", "recipient": PERSON, "text": "Pick one",
      "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "YES"}]}, "Pick one"),
    ({"kind": "text", "recipient": PERSON, "text": "hi", "tag": "HUMAN_AGENT", "reply_to": "mid.1"}, "hi"),
    ({"kind": "image", "recipient": PERSON, "url": "https://cdn.example.com/a.png"}, None),
    ({"kind": "sticker", "recipient": PERSON}, None),
    ({"kind": "post", "recipient": PERSON, "post_id": "1"}, None),
    ({"kind": "react", "recipient": PERSON, "message_id": "mid.1", "reaction": "love"}, None),
    ({"kind": "typing_on", "recipient": PERSON}, None),
    ({"kind": "button_template", "recipient": PERSON, "text": "Next?",
      "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}]}, None),
    ({"kind": "private_reply", "comment_id": "c1", "text": "Thanks!"}, None),
], ids=lambda value: value["kind"] if isinstance(value, dict) else None)
def test_only_kinds_whose_text_the_conversation_shows_can_be_compared(document: dict[str, Any],
                                                                      text: str | None) -> None:
    assert comparable_text(document) == text


def test_a_match_is_the_business_s_message_with_the_same_text_in_the_window_oldest_first() -> None:
    since, until = T0 - WINDOW_BEFORE, T0 + 20 + CLOCK_SKEW
    messages = [
        shown("m-later", "Thanks!", T0 + 4),
        shown("m-person", "Thanks!", T0 + 1, sender=PERSON, to=BUSINESS),  # the person's own words
        shown("m-other-text", "Thank you", T0 + 1),
        shown("m-other-person", "Thanks!", T0 + 1, to="5559999"),
        shown("m-yesterday", "Thanks!", T0 - 86_400),  # the same text, sent long before the attempt
        shown("m-too-late", "Thanks!", until + 1),
        shown("m-first", " Thanks! ", T0 + 1),
    ]
    assert candidates(messages, text="Thanks!", recipient=PERSON, since=since, until=until) == ["m-first", "m-later"]
    # created_time has whole seconds and clocks differ: a message up to WINDOW_BEFORE before the start is in
    assert candidates([shown("m-skew", "Thanks!", T0 - 3)], text="Thanks!", recipient=PERSON, since=since,
                      until=until) == ["m-skew"]
    assert candidates([shown("m-old", "Thanks!", T0 - 4)], text="Thanks!", recipient=PERSON, since=since,
                      until=until) == []
    assert candidates([{"id": "x"}, "junk", {"message": "Thanks!"}], text="Thanks!", recipient=PERSON, since=since,
                      until=until) == []


def test_twenty_messages_that_do_not_reach_back_to_the_attempt_cannot_prove_absence() -> None:
    assert reaches_back([shown(f"m{i}", "x", T0 + i) for i in range(19)], T0)  # the whole conversation
    assert not reaches_back([shown(f"m{i}", "x", T0 + i) for i in range(20)], T0)
    assert reaches_back([shown(f"m{i}", "x", T0 - 10 + i) for i in range(20)], T0)
