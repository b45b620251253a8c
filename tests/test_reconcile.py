"""Reconciling lost answers (IGSEND_UNKNOWN_OUTCOME=reconcile, the default): the matching rule as pure functions,
then end to end with the session's worker and sandbox (send deadline 5 s, so the horizon is 10 s after a POST
began): found at Meta -> delivered with Meta's id and one POST; not there -> sent again once; another job's
identical message is never taken; the Conversations API refusing, a kind it cannot compare and a private reply
-> unknown in the DLQ."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

import producers
from igsend.core import dlq
from igsend.core import sent as sent_index
from igsend.core.store import STATS_KEY
from tests.conftest import ACCOUNT_ID, received, wait_until
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


# --- end to end: the session's worker (IGSEND_UNKNOWN_OUTCOME unset: reconcile) and the sandbox ---------------



def fault(sandbox: str, recipient: str, *faults: dict[str, Any]) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(faults)},
                  timeout=5).raise_for_status()


def stat(r, name: str) -> int:
    return int(r.hget(STATS_KEY, name) or 0)


def settled(job: producers.Job, timeout: float = 40) -> dict[str, Any]:
    wait_until(lambda: job.status().final, timeout=timeout, interval=0.1)
    return job.info()


@pytest.mark.usefixtures("worker", "clean")
def test_a_lost_answer_is_found_at_meta_and_delivered_with_its_id_after_one_post(sandbox: str, r) -> None:
    fault(sandbox, "rec1", {"hang": True})
    job = producers.send_text("rec1", "did it arrive?")
    info = settled(job)
    [sent] = received(sandbox, recipient="rec1")
    assert info["status"] == "delivered" and info["attempts"] == 1
    assert info["result"] == {"recipient_id": "rec1", "message_id": sent["message_id"]}
    assert job.result(timeout=1)["message_id"] == sent["message_id"]
    assert sent_index.job_of(r, "default", sent["message_id"], delivered_ttl=3600) == job.id
    assert stat(r, "reconciled_delivered_total") == 1 and stat(r, "reconciled_total") == 1
    assert stat(r, "unknown_total") == 0 and dlq.show(job.id) is None
    time.sleep(0.5)  # proves a negative: nothing is sent again
    assert len(received(sandbox, recipient="rec1")) == 1


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_a_connection_dropped_before_sending_is_sent_again_once_after_the_horizon(sandbox: str, r) -> None:
    fault(sandbox, "rec2", {"drop": True})
    job = producers.send_text("rec2", "second time lucky")
    started = time.time()
    waiting = wait_until(lambda: "reconciling a lost answer" in (job.info().get("reason") or "") and job.info())
    assert waiting["status"] == "sending"  # its attempt still in flight: no copy of it can POST meanwhile
    info = settled(job)
    assert time.time() - started >= 10 - 1  # not before the horizon: the deadline (5 s) + 5 s
    [sent] = received(sandbox, recipient="rec2")
    assert info["status"] == "delivered" and info["attempts"] == 2
    assert info["result"]["message_id"] == sent["message_id"]
    log = info["attempt_log"]
    assert (log[0]["outcome"], log[0]["attempt"], log[-1]["outcome"], log[-1]["attempt"]) == ("unknown", 1,
                                                                                              "delivered", 2)
    assert any("not in the conversation" in entry.get("reconciled", "") for entry in log)
    assert stat(r, "reconciled_resent_total") == 1 and stat(r, "orphaned_total") == 0


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_graph_error_1357046_is_looked_up_too(sandbox: str, r) -> None:
    """Meta's "sent successfully, but the endpoint returned an error": the sandbox answers it without keeping the
    message, so the conversation shows nothing and the job is sent again once."""
    fault(sandbox, "rec8", {"code": 1, "subcode": 1357046})
    job = producers.send_text("rec8", "sent or not?")
    info = settled(job)
    assert info["status"] == "delivered" and info["attempts"] == 2
    assert info["attempt_log"][0]["code"] == 1 and info["attempt_log"][0]["subcode"] == 1357046
    assert len(received(sandbox)) == 1 and stat(r, "reconciled_resent_total") == 1


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_a_second_lost_answer_after_the_resend_is_unknown(sandbox: str, r) -> None:
    fault(sandbox, "rec3", {"drop": True}, {"drop": True})
    job = producers.send_text("rec3", "twice unlucky")
    info = settled(job, timeout=60)
    assert info["status"] == "unknown" and info["attempts"] == 2
    assert "not sent a third time" in info["reason"]
    assert dlq.show(job.id)["status"] == "unknown"
    assert received(sandbox, recipient="rec3") == []


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_another_jobs_identical_message_a_moment_earlier_is_not_taken(sandbox: str, r) -> None:
    earlier = producers.send_text("rec4", "Thanks!")
    first = earlier.result(timeout=30)["message_id"]
    assert sent_index.job_of(r, "default", first, delivered_ttl=3600) == earlier.id  # every delivery claims it
    fault(sandbox, "rec4", {"drop": True})
    job = producers.send_text("rec4", "Thanks!")  # within the window, but the message is the other job's
    info = settled(job)
    assert info["status"] == "delivered" and info["attempts"] == 2  # not found, so sent again
    texts = received(sandbox, recipient="rec4")
    assert [m["body"]["message"]["text"] for m in texts] == ["Thanks!", "Thanks!"]
    assert info["result"]["message_id"] == texts[1]["message_id"] != first


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_an_older_identical_message_outside_the_window_is_not_taken(sandbox: str, r) -> None:
    earlier = producers.send_text("rec5", "Thanks!")
    first = earlier.result(timeout=30)["message_id"]
    for key in sent_index.recent_keys("default", within=3600):  # as if sent long ago: no claim any more
        r.hdel(key, sent_index.digest(first))
    time.sleep(WINDOW_BEFORE + 1.5)  # older than the attempt's start minus the skew margin
    fault(sandbox, "rec5", {"drop": True})
    job = producers.send_text("rec5", "Thanks!")
    info = settled(job)
    assert info["status"] == "delivered" and info["attempts"] == 2
    assert info["result"]["message_id"] == received(sandbox, recipient="rec5")[1]["message_id"]


@pytest.mark.usefixtures("worker", "clean")
def test_a_refused_conversations_api_leaves_the_job_unknown(sandbox: str, r) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"account": ACCOUNT_ID, "conversations": "missing_permission"},
                  timeout=5).raise_for_status()
    fault(sandbox, "rec6", {"hang": True})
    job = producers.send_text("rec6", "can we tell?")
    info = settled(job)
    assert info["status"] == "unknown" and info["attempts"] == 1
    assert "not reconciled" in info["reason"] and "Graph error 10" in info["reason"]
    assert dlq.show(job.id)["status"] == "unknown"
    assert len(received(sandbox, recipient="rec6")) == 1
    assert stat(r, "reconcile_failed_total") == 1 and stat(r, "reconciled_total") == 0


@pytest.mark.parametrize("send,words", [
    (lambda: producers.send_attachment("rec7", "image", "https://cdn.example.com/a.png"), "cannot be compared"),
    (lambda: producers.send_sticker("rec7"), "cannot be compared"),
    (lambda: producers.reply_privately("COMMENT-rec7", "Thanks! Details in your DMs"), "private reply"),
], ids=["image", "sticker", "private-reply"])
@pytest.mark.usefixtures("worker", "clean")
def test_what_cannot_be_compared_stays_unknown(sandbox: str, send, words: str) -> None:
    fault(sandbox, "rec7", {"hang": True})
    fault(sandbox, "COMMENT-rec7", {"hang": True})
    job = send()
    info = settled(job)
    assert info["status"] == "unknown" and words in info["reason"]
    assert len(received(sandbox)) == 1 and dlq.show(job.id)["status"] == "unknown"


@pytest.mark.usefixtures("worker", "clean")
def test_a_burst_of_lost_answers_keeps_to_the_conversations_api_budget(sandbox: str, r) -> None:
    for i in range(6):
        fault(sandbox, f"burst{i}", {"hang": True})
    started = time.monotonic()
    jobs = [producers.send_text(f"burst{i}", f"burst {i}") for i in range(6)]
    for job in jobs:
        assert settled(job)["status"] == "delivered"
    # two calls each at 2 calls/s: the last of them about 6 s after the first
    assert time.monotonic() - started >= 5.0
    stats = requests.get(f"{sandbox}/_sandbox/stats", timeout=5).json()
    assert "613" not in stats["errors"]  # the sandbox never had to refuse a Conversations API call
    assert len(received(sandbox)) == 6 and stat(r, "reconciled_delivered_total") == 6
