"""The 24-hour window (7 days with HUMAN_AGENT; 7 days after a comment for a private reply), before queueing and
while a message waits: what igsend knows of a person's last message (webhooks, or the caller's
``last_user_message_at``) decides; when nothing is known, igsend sends and Meta decides."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from igsend.core import inbound
from producers import JobStatus, OutsideWindow, reply_privately, send, send_many, send_text
from tests.conftest import queue_depth, received
from tests.test_cli import igsend

HOUR = 3600.0


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


def message(**fields: object) -> dict:
    return {"kind": "text", "recipient": "r", "account": "default", "text": "hi", **fields}


def test_the_rules() -> None:
    now = 1_800_000_000.0
    assert inbound.outside_window(message(), None, now) is None  # nothing known: Meta decides
    assert inbound.outside_window(message(), now - 23 * HOUR, now) is None
    assert inbound.outside_window(message(), now - 25 * HOUR, now) == (
        "recipient", f"outside the 24-hour window (last message {iso(now - 25 * HOUR)})")
    assert inbound.outside_window(message(tag="HUMAN_AGENT"), now - 25 * HOUR, now) is None
    assert inbound.outside_window(message(tag="HUMAN_AGENT"), now - 8 * 24 * HOUR, now)[1].startswith(
        "outside the 7-day HUMAN_AGENT window")
    # the caller's last_user_message_at counts, and the later of the two wins
    assert inbound.outside_window(message(last_user_message_at=now - 30 * HOUR), None, now) is not None
    assert inbound.outside_window(message(last_user_message_at=now - 30 * HOUR), now - HOUR, now) is None
    # a send_at at or after the window's end is refused at once
    late = message(send_at=now + 2 * HOUR)
    assert inbound.outside_window(late, now - 23 * HOUR, now) == (
        "recipient", f"send_at {iso(now + 2 * HOUR)} is after the 24-hour window closes ({iso(now + HOUR)}; "
                     f"last message {iso(now - 23 * HOUR)})")
    reply = {"kind": "private_reply", "comment_id": "c1", "account": "default", "text": "thanks"}
    assert inbound.outside_window(reply, now - 6 * 24 * HOUR, now) is None
    assert inbound.outside_window(reply, now - 8 * 24 * HOUR, now)[0] == "comment_id"


@pytest.mark.usefixtures("worker", "clean")
def test_outside_the_window_is_refused_before_queueing_and_inside_is_delivered(r, sandbox: str) -> None:
    now = time.time()
    inbound.note_user_message(r, "default", "window-closed", now - 25 * HOUR)
    inbound.note_user_message(r, "default", "window-open", now - HOUR)
    with pytest.raises(OutsideWindow) as caught:
        send_text("window-closed", "too late")
    assert str(caught.value) == f"recipient: outside the 24-hour window (last message {iso(now - 25 * HOUR)})"
    assert queue_depth(r) == 0 and not list(r.scan_iter("igsend:job:*"))
    assert send_text("window-open", "in time").result(timeout=30)["message_id"]
    # a person's reply, tagged HUMAN_AGENT: 7 days
    assert send_text("window-closed", "a colleague here", tag="HUMAN_AGENT").result(timeout=30)["message_id"]
    # nothing known of this person: sent, and Meta decides
    assert send_text("window-unknown", "hello").result(timeout=30)["message_id"]
    # a caller without webhooks says when the person last wrote
    with pytest.raises(OutsideWindow):
        send(message(recipient="window-caller", last_user_message_at=now - 2 * 24 * HOUR))
    batch = send_many([message(recipient="window-closed"), message(recipient="window-open")])
    assert str(batch.invalid[0]).startswith("recipient: outside the 24-hour window") and len(batch.queued) == 1


@pytest.mark.usefixtures("worker", "clean")
def test_http_answers_422_on_recipient_and_the_cli_exits_1(r) -> None:
    from tests.test_api import AUTH, app

    inbound.note_user_message(r, "default", "window-http", time.time() - 30 * HOUR)
    answer = app.test_client().post("/v1/messages", json=message(recipient="window-http"), headers=AUTH)
    assert answer.status_code == 422
    assert answer.get_json()["errors"]["json"]["recipient"][0].startswith("outside the 24-hour window")
    cli = igsend("send", "text", "window-http", "hi")
    assert cli.returncode == 1 and cli.stderr.startswith("error: recipient: outside the 24-hour window")


@pytest.mark.usefixtures("worker", "clean")
def test_a_window_that_closes_while_the_message_waits_dead_letters_it(r, sandbox: str) -> None:
    """The message waits behind an ordered predecessor scheduled past the end of its window."""
    now = time.time()
    inbound.note_user_message(r, "default", "window-wait", now - 24 * HOUR + 2)  # closes in 2 s
    head = send_text("window-wait", "1", ordered=True, tag="HUMAN_AGENT", send_at=now + 3)
    waiting = send_text("window-wait", "2", ordered=True)
    assert head.result(timeout=15)["message_id"]
    assert waiting.wait(timeout=15) is JobStatus.DEAD
    assert waiting.info()["reason"].startswith("window closed: the 24-hour window closed while the message waited")
    assert [m["body"]["message"]["text"] for m in received(sandbox)] == ["1"]


@pytest.mark.usefixtures("worker", "clean")
def test_a_private_reply_to_an_old_comment_is_refused(r) -> None:
    inbound.note_comment(r, "default", "17900000000000999", time.time() - 8 * 24 * HOUR)
    with pytest.raises(OutsideWindow) as caught:
        reply_privately("17900000000000999", "thanks!")
    assert str(caught.value).startswith("comment_id: outside the 7-day private-reply window (comment ")
    assert json.dumps(caught.value.normalized_messages())
