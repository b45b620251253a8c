"""workers/reconcile.py without a worker or the sandbox: the matching rule as pure functions, then the Reconciler
against the suite's own Redis (a database no worker consumes: the claims, the Conversations API budget, the job's
lock) with Meta's Conversations API answered by ``responses``. What an operator reads from it: delivered with
Meta's id, absent (sent again), unknown with the reason, or asked again later at a time; which message ids the
account's index holds for the job; how many calls were made to Meta and how long the job's lock was kept.
tests/test_reconcile.py runs the same end to end with a worker and the sandbox."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis as redis_lib
import requests
import responses
from responses import matchers

from igsend.core import sent
from igsend.core.settings import DEADLINE_MARGIN
from igsend.core.store import limiter_key, lock_key
from tests.conftest import TOKEN
from workers.accounts import Account
from workers.graph import GraphClient
from workers.reconcile import (
    CLOCK_SKEW,
    GET_DEADLINE,
    MAX_AGE,
    MAX_INLINE_WAIT,
    MESSAGE_FIELDS,
    WINDOW_BEFORE,
    Found,
    Reconciler,
    candidates,
    comparable_text,
    created_at,
    reaches_back,
)

BUSINESS, PERSON = "17841400000000001", "5551234"
T0 = 1_796_378_400.0  # 2026-12-04T10:00:00+0000
GRAPH, VERSION = "https://graph.reconcile.test", "v21.0"
ACCOUNT = Account(name="shop", id=BUSINESS, login="instagram", graph_url=GRAPH, api_version=VERSION, token=TOKEN)
#: the same account with a Conversations API budget of 100 calls/s: a second call waits a hundredth of a second
FAST = Account(name="shop", id=BUSINESS, login="instagram", graph_url=GRAPH, api_version=VERSION, token=TOKEN,
               limits={"conversations": 100})
CONVERSATION = "aWdfconversation1"
LIST_URL = f"{GRAPH}/{VERSION}/{BUSINESS}/conversations"
MESSAGES_URL = f"{GRAPH}/{VERSION}/{CONVERSATION}"
JOB = "2f1c7a52-5d0e-4a53-9a3e-0b8d1e2f3a4b"
OTHER_JOB = "9e8d7c6b-5a49-4837-a625-1403f2e1d0c9"
TEXT = {"kind": "text", "recipient": PERSON, "text": "did it arrive?", "account": "shop"}


def stamp(at: float) -> str:
    """Meta's created_time for Unix time ``at`` (whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(at))


def shown(mid: str, text: str, at: float, *, sender: Any = BUSINESS, to: Any = PERSON) -> dict[str, Any]:
    """A message as the Conversations API shows it."""
    return {"id": mid, "created_time": stamp(at), "from": {"username": "shop", "id": sender},
            "to": {"data": [{"username": "someone", "id": to}]}, "message": text}


# --- the matching rule -------------------------------------------------------------------------------------------


def test_created_time_is_read_in_both_of_meta_s_layouts() -> None:
    assert created_at("2026-12-04T10:00:00+0000") == T0
    assert created_at("2026-12-04T11:00:00+0100") == T0
    assert created_at("2026-12-04T10:00:00.250+0000") == T0 + 0.25
    assert created_at("yesterday") is None
    assert created_at(None) is None and created_at(T0) is None


@pytest.mark.parametrize(("document", "text"), [
    ({"kind": "text", "recipient": PERSON, "text": "Thanks!"}, "Thanks!"),
    ({"kind": "link", "recipient": PERSON, "url": "https://example.com/a"}, "https://example.com/a"),
    ({"kind": "quick_replies", "recipient": PERSON, "text": "Pick one",
      "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "YES"}]}, "Pick one"),
    ({"kind": "text", "recipient": PERSON, "text": "   "}, None),
    ({"kind": "image", "recipient": PERSON, "url": "https://cdn.example.com/a.png"}, None),
    ({"kind": "typing_on", "recipient": PERSON}, None),
    ({"kind": "text", "recipient": PERSON, "text": "Thanks!", "comment_id": "c1"}, None),
    ({"recipient": PERSON, "text": "no kind"}, None),
], ids=["text", "link", "quick_replies", "blank", "image", "typing_on", "with_comment", "no_kind"])
def test_only_a_text_the_conversation_shows_can_be_compared(document: dict[str, Any], text: str | None) -> None:
    assert comparable_text(document) == text


def test_a_match_is_the_business_s_message_to_the_person_with_the_text_in_the_window_oldest_first() -> None:
    since, until = T0 - 3, T0 + 20
    messages = [
        "junk",
        {"message": "Thanks!", "created_time": stamp(T0 + 1)},  # no id
        shown("m-later", "Thanks!", T0 + 4),
        shown("m-person", "Thanks!", T0 + 1, sender=PERSON, to=BUSINESS),  # the person's own words
        shown("m-person-to-self", "Thanks!", T0 + 1, sender=PERSON, to=PERSON),  # from the person: never ours
        shown("m-person-number", "Thanks!", T0 + 1, sender=int(PERSON), to=int(BUSINESS)),
        shown("m-other-text", "Thank you", T0 + 1),
        shown("m-other-person", "Thanks!", T0 + 1, to="5559999"),
        shown("m-before", "Thanks!", since - 1),
        shown("m-after", "Thanks!", until + 1),
        shown("m-at-until", "Thanks!", until),
        shown("m-first", " Thanks! ", T0 + 1),
        shown("m-at-since", "Thanks!", since),
        {**shown("m-number-to", "Thanks!", T0 + 2), "to": {"data": ["junk", {"id": int(PERSON)}]}},
        {**shown("m-from-text", "Thanks!", T0 + 3), "from": "shop"},
    ]
    assert candidates(messages, text="Thanks! ", recipient=PERSON, since=since, until=until) == [
        "m-at-since", "m-first", "m-number-to", "m-from-text", "m-later", "m-at-until"]


@pytest.mark.parametrize("message", [
    "junk",
    {**shown("m", "Thanks!", T0), "id": 7},
    {key: value for key, value in shown("m", "Thanks!", T0).items() if key != "id"},
    {**shown("m", "Thanks!", T0), "to": "5551234"},
    {**shown("m", "Thanks!", T0), "to": {"data": None}},
    {**shown("m", "Thanks!", T0), "to": {"data": [PERSON]}},
    {**shown("m", "Thanks!", T0), "message": None},
    {**shown("m", "Thanks!", T0), "created_time": "at ten"},
], ids=["not-a-dict", "number-id", "no-id", "to-not-a-dict", "to-no-data", "to-not-dicts", "no-text", "no-time"])
def test_a_message_that_cannot_be_this_attempt_s_is_no_candidate(message: Any) -> None:
    assert candidates([message], text="Thanks!", recipient=PERSON, since=T0 - 3, until=T0 + 20) == []


def test_twenty_messages_that_do_not_reach_back_to_the_attempt_cannot_prove_absence() -> None:
    assert reaches_back([shown(f"m{i}", "x", T0 + i) for i in range(19)], T0)  # the whole conversation
    assert not reaches_back([shown(f"m{i}", "x", T0 + i) for i in range(20)], T0)  # the oldest at T0: not before
    assert reaches_back([shown(f"m{i}", "x", T0 - 1 + i) for i in range(20)], T0)
    unreadable = ["junk", {**shown("m-undated", "x", T0 - 5), "created_time": None}]
    assert not reaches_back([*unreadable, *(shown(f"m{i}", "x", T0 + i) for i in range(18))], T0)
    assert reaches_back([*unreadable, *(shown(f"m{i}", "x", T0 - 1 + i) for i in range(18))], T0)


# --- the Reconciler: the suite's Redis, Meta's answers through responses ----------------------------------------


@pytest.fixture
def r(private_db: redis_lib.Redis) -> redis_lib.Redis:
    """A database of its own: the claims, the budget and the lock of these tests only."""
    return private_db


@pytest.fixture
def meta() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


class Sleeps:
    """The Reconciler's sleep: really sleeps, and notes how long and how much of the job's lock was left."""

    def __init__(self, client: redis_lib.Redis):
        self.client = client
        self.calls: list[tuple[float, int, float]] = []  # (seconds, the lock's pttl, time.time() when read)

    def __call__(self, seconds: float) -> None:
        self.calls.append((seconds, int(self.client.pttl(lock_key(JOB))), time.time()))
        # a longer wait would be Found.LATER: the job waits in igsend:delayed, holding no worker thread
        assert 0 <= seconds <= MAX_INLINE_WAIT, f"a wait of {seconds} s in place"
        time.sleep(seconds)


def conversations(meta: responses.RequestsMock, *answers: dict[str, Any], status: int = 200) -> None:
    """Meta's list of conversations with the person, one answer per call (the last one repeats)."""
    for answer in answers:
        meta.get(LIST_URL, json=answer, status=status, match=[
            matchers.query_param_matcher({"platform": "instagram", "user_id": PERSON}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])


def found(meta: responses.RequestsMock, *answers: list[dict[str, Any]]) -> None:
    """The conversation with the person, and its messages: one list per call (the last one repeats)."""
    conversations(meta, {"data": [{"id": CONVERSATION, "updated_time": stamp(time.time())}]})
    for messages in answers:
        meta.get(MESSAGES_URL, json={"messages": {"data": messages}, "id": CONVERSATION},
                 match=[matchers.query_param_matcher({"fields": MESSAGE_FIELDS})])


def calls(meta: responses.RequestsMock, url: str) -> int:
    return sum(call.request.url.split("?")[0] == url for call in meta.calls)


def claims(r: redis_lib.Redis) -> dict[str, str]:
    """The account's index of sent ids: digest -> job id, across its hashes."""
    return {field: sent.job_id_of(value) for key in r.scan_iter("igsend:sent:shop:*")
            for field, value in r.hgetall(key).items()}


def reconcile(r: redis_lib.Redis, message: dict[str, Any] = TEXT, *, started: float, deadline: float = 5.0,
              job_id: str = JOB, **options: Any) -> Any:
    return Reconciler(r, **options).reconcile(GraphClient(), job_id, message, ACCOUNT, started=started,
                                              deadline=deadline)


def test_the_attempt_s_message_at_meta_is_delivered_with_its_id_and_claimed_for_the_job(
        r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    started = time.time() - 1
    found(meta, [shown("m-person", "hello", started - 60, sender=PERSON, to=BUSINESS),
                 shown("m-sent", "did it arrive?", started + 1)])
    result = reconcile(r, started=started)
    assert (result.found, result.message_id, result.reason) == (Found.DELIVERED, "m-sent",
                                                                "found at Meta by the Conversations API")
    assert result.due is None
    assert claims(r) == {sent.digest("m-sent"): JOB}
    # the claim lives in this hour's hash, as long as a delivered record (a day by default) and an hour more
    [key] = r.keys("igsend:sent:shop:*")
    assert key in sent.recent_keys("shop", within=0)[:2]
    assert r.ttl(key) == sent.keep_seconds(24 * 3600)
    assert calls(meta, LIST_URL) == 1 and calls(meta, MESSAGES_URL) == 1


def test_a_claim_is_kept_as_long_as_the_delivered_records(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    started = time.time() - 1
    found(meta, [shown("m-sent", "did it arrive?", started)])
    assert reconcile(r, started=started, delivered_ttl=7 * 86400).message_id == "m-sent"
    [key] = r.keys("igsend:sent:shop:*")
    assert r.ttl(key) == sent.keep_seconds(7 * 86400)


def test_another_job_s_identical_message_is_never_taken(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    """The same text a moment earlier, claimed by the job that sent it (in the next hour's hash: that worker's
    clock is ahead): the next one is this job's; asked again, the job gets the same one."""
    started = time.time() - 1
    found(meta, [shown("m-other", "did it arrive?", started), shown("m-mine", "did it arrive?", started + 1)])
    r.hset(sent.recent_keys("shop", within=0)[1], sent.digest("m-other"), sent.compact_job_id(OTHER_JOB))
    assert reconcile(r, started=started).message_id == "m-mine"
    assert reconcile(r, started=started).message_id == "m-mine"
    assert claims(r) == {sent.digest("m-other"): OTHER_JOB, sent.digest("m-mine"): JOB}


def test_a_message_the_job_claimed_before_is_its_own_again(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    started = time.time() - 1
    found(meta, [shown("m-1", "did it arrive?", started), shown("m-2", "did it arrive?", started + 1)])
    this_hour, next_hour = sent.recent_keys("shop", within=0)[:2]
    r.hset(next_hour, sent.digest("m-1"), sent.compact_job_id(JOB))
    assert reconcile(r, started=started).message_id == "m-1"
    assert claims(r) == {sent.digest("m-1"): JOB} and not r.exists(this_hour)


def test_when_every_match_is_another_job_s_the_attempt_is_absent(r: redis_lib.Redis,
                                                                  meta: responses.RequestsMock) -> None:
    started = time.time() - 11
    found(meta, [shown("m-other", "did it arrive?", started + 1)])
    r.hset(sent.recent_keys("shop", within=0)[0], sent.digest("m-other"), sent.compact_job_id(OTHER_JOB))
    result = reconcile(r, started=started)
    assert result.found is Found.ABSENT and result.message_id is None
    assert claims(r) == {sent.digest("m-other"): OTHER_JOB}


def test_the_window_reaches_the_skew_and_a_second_before_the_start_and_the_skew_after_the_horizon(
        r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    started = float(int(time.time())) - 30  # whole seconds, as Meta's created_time
    horizon = started + 5.0 + 5.0
    found(meta, [shown("m-too-early", "did it arrive?", started - WINDOW_BEFORE - 1),
                 shown("m-too-late", "did it arrive?", horizon + CLOCK_SKEW + 1)])
    assert reconcile(r, started=started).found is Found.ABSENT
    meta.reset()
    found(meta, [shown("m-earliest", "did it arrive?", started - WINDOW_BEFORE)])
    assert reconcile(r, started=started).message_id == "m-earliest"
    meta.reset()
    found(meta, [shown("m-latest", "did it arrive?", horizon + CLOCK_SKEW)])
    assert reconcile(r, started=started, job_id=OTHER_JOB).message_id == "m-latest"


def test_not_there_after_the_horizon_is_absent_on_one_look(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    """The horizon is the start + the POST's deadline + 5 s of grace: past it, one look decides."""
    started = time.time() - 7 - 5.5
    found(meta, [shown("m-old", "did it arrive?", started - 3600)])
    result = reconcile(r, started=started, deadline=7.0)
    assert result.found is Found.ABSENT and result.message_id is None and result.due is None
    match = re.fullmatch(r"not in the conversation (\d+\.\d) s after the attempt began \(its deadline 7 s \+ 5 s\)",
                         result.reason)
    assert match and 12.5 <= float(match[1]) <= time.time() - started + 0.05  # when it was asked, rounded
    assert calls(meta, LIST_URL) == 1 and calls(meta, MESSAGES_URL) == 1
    assert claims(r) == {}


def test_no_conversation_with_the_person_after_the_horizon_is_absent(r: redis_lib.Redis,
                                                                      meta: responses.RequestsMock) -> None:
    conversations(meta, {"data": []})
    result = reconcile(r, started=time.time() - 11, grace=0.5)
    assert result.found is Found.ABSENT
    assert "its deadline 5 s + 0.5 s" in result.reason
    assert calls(meta, LIST_URL) == 1 and calls(meta, MESSAGES_URL) == 0


def test_a_horizon_more_than_two_seconds_away_is_asked_again_later_holding_no_thread(
        r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    started = time.time()
    found(meta, [])
    sleeps = Sleeps(r)
    result = Reconciler(r, grace=1.5, sleep=sleeps).reconcile(GraphClient(), JOB, TEXT, FAST, started=started,
                                                              deadline=3.0)
    assert (result.found, result.due) == (Found.LATER, started + 3.0 + 1.5)
    assert result.reason == "not in the conversation yet: asked again at the horizon"
    assert all(seconds <= 1 / FAST.rate("conversations") for seconds, _, _ in sleeps.calls)  # a slot's wait only
    assert calls(meta, MESSAGES_URL) == 1


def test_a_horizon_close_by_is_waited_for_in_place_and_the_conversation_asked_again(
        r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    """Under two seconds away: the worker keeps the job's lock for the wait and one more call, sleeps until the
    horizon and looks again (the conversation's id is not asked for twice); the message shows up then."""
    r.set(lock_key(JOB), "worker", px=1000)
    started = time.time()
    horizon = started + 0.3 + 0.3
    found(meta, [], [shown("m-late", "did it arrive?", started + 1)])
    sleeps = Sleeps(r)
    result = Reconciler(r, grace=0.3, sleep=sleeps).reconcile(GraphClient(), JOB, TEXT, FAST, started=started,
                                                              deadline=0.3)
    assert (result.found, result.message_id) == (Found.DELIVERED, "m-late")
    assert calls(meta, LIST_URL) == 1 and calls(meta, MESSAGES_URL) == 2
    seconds, ttl, at = max(sleeps.calls)  # the wait for the horizon (a slot of 100 calls/s is a 0.01 s wait)
    assert 0 < seconds <= horizon - started
    # the lock outlasts the wait to the horizon, an inline wait and a call, and its margin
    expected = (horizon - at + MAX_INLINE_WAIT + GET_DEADLINE + DEADLINE_MARGIN) * 1000
    assert expected - 2 <= ttl <= (horizon - started + MAX_INLINE_WAIT + GET_DEADLINE + DEADLINE_MARGIN) * 1000
    assert time.time() >= horizon


def test_no_conversation_yet_is_asked_for_again_at_the_horizon(r: redis_lib.Redis,
                                                               meta: responses.RequestsMock) -> None:
    started = time.time()
    conversations(meta, {"data": []})
    result = reconcile(r, started=started, deadline=0.3, grace=0.3, sleep=Sleeps(r))
    assert result.found is Found.ABSENT
    assert calls(meta, LIST_URL) == 2 and calls(meta, MESSAGES_URL) == 0
    assert time.time() >= started + 0.6


def test_each_call_keeps_the_job_s_lock_and_waits_for_the_conversations_budget(
        r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    """2 calls/s per account: the second call of a reconciliation waits for its slot, and the lock is kept for
    the wait, one call and the margin."""
    r.set(lock_key(JOB), "worker", px=1000)
    started = time.time() - 11
    found(meta, [])
    sleeps = Sleeps(r)
    before = time.time()
    assert reconcile(r, started=started, sleep=sleeps).found is Found.ABSENT
    [(seconds, ttl, at)] = sleeps.calls
    assert 0 < seconds <= 1 / ACCOUNT.rate("conversations")
    assert (seconds + GET_DEADLINE + DEADLINE_MARGIN) * 1000 - (at - before) * 1000 - 2 <= ttl
    assert ttl <= (seconds + GET_DEADLINE + DEADLINE_MARGIN) * 1000
    assert calls(meta, LIST_URL) == 1 and calls(meta, MESSAGES_URL) == 1
    # the next call of the account is booked after this one's slot
    assert float(r.get(limiter_key("shop", "conversations")) or 0) > 0


def test_a_lock_is_kept_its_margin_for_a_call_that_waits_for_nothing(r: redis_lib.Redis,
                                                                     meta: responses.RequestsMock) -> None:
    r.set(lock_key(JOB), "worker", px=1000)
    conversations(meta, {"data": []})
    before = time.time()
    assert reconcile(r, started=time.time() - 11).found is Found.ABSENT
    ttl = r.pttl(lock_key(JOB))
    assert (GET_DEADLINE + DEADLINE_MARGIN) * 1000 - (time.time() - before) * 1000 - 2 <= ttl
    assert ttl <= (GET_DEADLINE + DEADLINE_MARGIN) * 1000


def test_a_budget_booked_more_than_two_seconds_ahead_is_asked_again_later(r: redis_lib.Redis,
                                                                          meta: responses.RequestsMock) -> None:
    """A burst of lost answers on one account: no call, no wait in place, the job comes back at its slot."""
    seconds, micro = r.time()
    now = seconds + micro / 1e6
    r.set(limiter_key("shop", "conversations"), f"{now + MAX_INLINE_WAIT + 0.95:.6f}")  # nothing booked past it
    sleeps = Sleeps(r)
    before = time.time()
    result = reconcile(r, started=time.time() - 11, sleep=sleeps)
    after = time.time()
    assert result.found is Found.LATER and result.message_id is None
    assert result.due is not None and before + MAX_INLINE_WAIT <= result.due <= after + MAX_INLINE_WAIT + 0.95
    match = re.fullmatch(r"the Conversations API budget \(2 calls/s\) is booked (\d\.\d) s ahead", result.reason)
    assert match and MAX_INLINE_WAIT <= float(match[1]) <= MAX_INLINE_WAIT + 1
    assert sleeps.calls == [] and len(meta.calls) == 0
    assert r.get(limiter_key("shop", "conversations")) == f"{now + MAX_INLINE_WAIT + 0.95:.6f}"


def test_a_budget_booked_less_than_two_seconds_ahead_is_waited_for(r: redis_lib.Redis,
                                                                   meta: responses.RequestsMock) -> None:
    seconds, micro = r.time()
    r.set(limiter_key("shop", "conversations"), f"{seconds + micro / 1e6 + 0.3:.6f}")
    found(meta, [shown("m-sent", "did it arrive?", time.time() - 10)])
    sleeps = Sleeps(r)
    assert reconcile(r, started=time.time() - 11, sleep=sleeps).message_id == "m-sent"
    assert 0 < sleeps.calls[0][0] <= 0.3


def test_an_attempt_older_than_the_claims_are_kept_is_not_reconciled(r: redis_lib.Redis,
                                                                      meta: responses.RequestsMock) -> None:
    result = reconcile(r, started=time.time() - MAX_AGE - 1)
    assert result.found is Found.FAILED and len(meta.calls) == 0
    match = re.fullmatch(rf"the attempt began (\d+) s ago, more than {MAX_AGE:.0f} s: too old to tell it from "
                         r"other jobs' messages", result.reason)
    assert match and int(match[1]) >= MAX_AGE + 1


def test_an_attempt_just_younger_than_that_is(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    found(meta, [shown("m-sent", "did it arrive?", time.time() - MAX_AGE + 5)])
    assert reconcile(r, started=time.time() - MAX_AGE + 5).message_id == "m-sent"


def test_a_private_reply_cannot_be_found_by_the_person(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    result = reconcile(r, {"kind": "private_reply", "comment_id": "c1", "text": "Thanks!"}, started=time.time())
    assert (result.found, result.reason) == (Found.FAILED, "a private reply: the Conversations API finds "
                                                           "conversations by the person's IGSID, not by the comment")
    assert len(meta.calls) == 0


def test_a_kind_without_text_of_its_own_cannot_be_compared(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    result = reconcile(r, {"kind": "image", "recipient": PERSON, "url": "https://cdn.example.com/a.png"},
                       started=time.time())
    assert (result.found, result.reason) == (Found.FAILED, "a image message cannot be compared: the conversation "
                                                           "shows no text of its own for it")
    assert len(meta.calls) == 0


def test_twenty_recent_messages_after_the_attempt_cannot_prove_it_absent(r: redis_lib.Redis,
                                                                          meta: responses.RequestsMock) -> None:
    started = time.time() - 60
    found(meta, [shown(f"m{i}", f"busy {i}", started + i) for i in range(20)])
    result = reconcile(r, started=started)
    assert (result.found, result.reason) == (Found.FAILED, "the conversation's 20 most recent messages do not "
                                                           "reach back to the attempt")


def test_a_match_among_twenty_recent_messages_is_found_all_the_same(r: redis_lib.Redis,
                                                                    meta: responses.RequestsMock) -> None:
    started = time.time() - 60
    found(meta, [*(shown(f"m{i}", f"busy {i}", started + i) for i in range(19)),
                 shown("m-sent", "did it arrive?", started + 11)])
    assert reconcile(r, started=started).message_id == "m-sent"


@pytest.mark.parametrize(("listed", "reason"), [
    ({"data": "none"}, "the Conversations API answered without a list of conversations"),
    ({"paging": {}}, "the Conversations API answered without a list of conversations"),
    ({"data": ["c1"]}, "the Conversations API answered a conversation without an id"),
    ({"data": [{"id": 42}]}, "the Conversations API answered a conversation without an id"),
], ids=["data-not-a-list", "no-data", "not-a-dict", "number-id"])
def test_a_list_of_conversations_that_makes_no_sense_leaves_the_job_unknown(
        r: redis_lib.Redis, meta: responses.RequestsMock, listed: dict[str, Any], reason: str) -> None:
    conversations(meta, listed)
    result = reconcile(r, started=time.time() - 11)
    assert (result.found, result.reason) == (Found.FAILED, reason)
    assert calls(meta, MESSAGES_URL) == 0


@pytest.mark.parametrize("answer", [{"messages": {"paging": {}}}, {"messages": {"data": "none"}},
                                    {"messages": ["m1"]}], ids=["no-data", "data-not-a-list", "edge-not-a-dict"])
def test_a_conversation_without_its_messages_leaves_the_job_unknown(r: redis_lib.Redis, meta: responses.RequestsMock,
                                                                    answer: dict[str, Any]) -> None:
    conversations(meta, {"data": [{"id": CONVERSATION}]})
    meta.get(MESSAGES_URL, json=answer)
    result = reconcile(r, started=time.time() - 11)
    assert (result.found, result.reason) == (Found.FAILED, "the Conversations API answered a conversation without "
                                                           "its messages")


def test_a_conversation_that_shows_no_messages_edge_has_none(r: redis_lib.Redis, meta: responses.RequestsMock) -> None:
    conversations(meta, {"data": [{"id": CONVERSATION}, {"id": "another"}]})
    meta.get(MESSAGES_URL, json={"id": CONVERSATION})
    assert reconcile(r, started=time.time() - 11).found is Found.ABSENT


@pytest.mark.parametrize(("status", "body", "reason"), [
    (403, {"error": {"message": f"no permission for {TOKEN}", "code": 10, "error_subcode": 2534022}},
     "the Conversations API answered HTTP 403 (Graph error 10/2534022: no permission for [redacted])"),
    (400, {"error": {"message": "x" * 300, "code": 100}},
     f"the Conversations API answered HTTP 400 (Graph error 100: {'x' * 200})"),
    (500, {"error": {"code": 1}}, "the Conversations API answered HTTP 500 (Graph error 1: )"),
    (200, {"error": {"code": 4, "error_subcode": 0, "message": "too many calls"}},
     "the Conversations API answered HTTP 200 (Graph error 4/0: too many calls)"),
    (200, {"error": "odd"}, "the Conversations API answered HTTP 200"),
    (200, ["not", "an", "object"], "the Conversations API answered HTTP 200"),
    (302, {"data": []}, "the Conversations API answered HTTP 302"),
    (201, {"data": []}, "the Conversations API answered HTTP 201"),
], ids=["403", "long-message", "no-message", "200-error", "error-not-a-dict", "200-list", "302", "201"])
def test_a_refusal_or_error_of_the_conversations_api_leaves_the_job_unknown(
        r: redis_lib.Redis, meta: responses.RequestsMock, status: int, body: Any, reason: str) -> None:
    meta.get(LIST_URL, json=body, status=status)
    result = reconcile(r, started=time.time() - 11, redact=lambda text: text.replace(TOKEN, "[redacted]"))
    assert (result.found, result.reason) == (Found.FAILED, reason)


def test_meta_s_error_text_is_shown_as_is_without_a_redaction(r: redis_lib.Redis,
                                                               meta: responses.RequestsMock) -> None:
    meta.get(LIST_URL, json={"error": {"message": "Unsupported get request", "code": 100, "error_subcode": 33}},
             status=400)
    assert reconcile(r, started=time.time() - 11).reason == ("the Conversations API answered HTTP 400 (Graph error "
                                                            "100/33: Unsupported get request)")


@pytest.mark.parametrize(("failure", "reason"), [
    (requests.ConnectionError("refused"), "no answer from the Conversations API (ConnectionError)"),
    (requests.ReadTimeout("slow"), "no answer from the Conversations API (ReadTimeout)"),
    (ValueError("odd"), "the Conversations API call failed (ValueError)"),
], ids=["connection", "timeout", "other"])
def test_no_answer_from_the_conversations_api_leaves_the_job_unknown(r: redis_lib.Redis,
                                                                    meta: responses.RequestsMock,
                                                                    failure: Exception, reason: str) -> None:
    meta.get(LIST_URL, body=failure)
    result = reconcile(r, started=time.time() - 11)
    assert (result.found, result.reason, result.message_id, result.due) == (Found.FAILED, reason, None, None)


class _SlowConversations(BaseHTTPRequestHandler):
    """Meta's Conversations API answering after ``server.delay`` seconds: no conversation with the person."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        body = json.dumps({"data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_call_has_its_own_deadline_not_the_client_s_send_deadline(r: redis_lib.Redis) -> None:
    """The Graph client's POSTs may have a short deadline; a Conversations API call may take GET_DEADLINE."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowConversations)
    server.delay = 1.0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow_meta = Account(name="shop", id=BUSINESS, login="instagram", api_version=VERSION, token=TOKEN,
                            graph_url=f"http://127.0.0.1:{server.server_address[1]}")
        assert server.delay < GET_DEADLINE  # type: ignore[attr-defined]
        result = Reconciler(r).reconcile(GraphClient(read_timeout=0.5), JOB, TEXT, slow_meta,
                                         started=time.time() - 11, deadline=5.0)
        assert result.found is Found.ABSENT, result.reason
    finally:
        server.shutdown()
        server.server_close()
