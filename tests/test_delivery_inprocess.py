"""The delivery policy in-process: the real ``igsend.send_message`` task, a real Redis, a scripted Graph API.

Each test runs the task with Celery's eager ``apply`` in this process (one call = one copy of the job's message
reaching a worker), against a Redis database no worker consumes (``private_db``), with :class:`FakeGraph` in
place of the Graph client (``workers.tasks.use_graph_client``, the task's one seam). Retries, pauses, dead
letters and a tripped breaker are then states to read in Redis, not timings to wait for. The end-to-end tests
(test_delivery_policy, test_meta_policy, test_guarantees) keep proving the wiring: a real worker, the
scheduler bringing retries back, the sandbox's wire formats.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from celery.result import EagerResult

import producers
from igsend.core import dlq
from igsend.core.account_state import mark_healthy, state
from igsend.core.store import DELAYED_KEY, INFLIGHT_KEY, OUTCOMES_KEY, STATS_KEY, held_key, job_key, lock_key
from producers import Job
from tests.conftest import ACCOUNT_ID, SHOP_TOKEN, TOKEN, reset_client_caches
from workers import tasks
from workers.accounts import Account, registry
from workers.graph import GraphClient, GraphResponse, SendDeadlineExceeded

Answer = GraphResponse | requests.RequestException
_message_ids = itertools.count(1)


def ok(recipient: str) -> GraphResponse:
    """Meta's answer to a send it accepted."""
    return GraphResponse(200, {"recipient_id": recipient, "message_id": f"mid.fake{next(_message_ids)}"}, {}, 0.01)


def graph_error(code: int, subcode: int | None = None, *, status: int = 400, message: str = "(#0) scripted error",
                headers: dict[str, str] | None = None) -> GraphResponse:
    """A Graph error answer, shaped like Meta's (and the sandbox's)."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code,
                             "fbtrace_id": "AfakeTrace123"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return GraphResponse(status, {"error": error}, headers or {}, 0.01)


class FakeGraph(GraphClient):
    """Answers each POST from a script per recipient, then with a delivery; remembers every POST.

    No session and no socket: ``__init__`` deliberately skips GraphClient's, so nothing here can reach a
    network. A scripted ``requests`` exception is raised the way the real client raises it."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Answer]] = {}
        self.sticky: dict[str, Answer] = {}
        self.posts: list[tuple[str, dict[str, Any]]] = []  # (account name, body), oldest first

    def answer(self, recipient: str, *answers: Answer, sticky: bool = False) -> None:
        """Queue ``answers`` for ``recipient``; ``sticky``: the last one answers every POST after them."""
        self.scripts.setdefault(recipient, []).extend(answers)
        if sticky:
            self.sticky[recipient] = answers[-1]

    def send(self, account: Account, body: dict[str, Any], *, deadline: float | None = None) -> GraphResponse:
        recipient = body["recipient"]["id"]
        self.posts.append((account.name, body))
        script = self.scripts.get(recipient)
        answer = script.pop(0) if script else self.sticky.get(recipient) or ok(recipient)
        if isinstance(answer, requests.RequestException):
            raise answer
        return answer

    def count(self, recipient: str | None = None) -> int:
        """POSTs made (to ``recipient``, if given)."""
        return sum(1 for _, body in self.posts if recipient is None or body["recipient"]["id"] == recipient)


INPROCESS_ENV = {
    "IGSEND_ACCESS_TOKEN": TOKEN,
    "IGSEND_ACCOUNT_ID": ACCOUNT_ID,
    "IGSEND_LOGIN": "instagram",
    "IGSEND_GRAPH_URL": "http://graph.invalid",  # never contacted: FakeGraph answers instead
    "TEST_SHOP_TOKEN": SHOP_TOKEN,
    "IGSEND_MAX_ATTEMPTS": "4",
    # Backoff of at most a millisecond: a retry is due at once, so the next apply() is admitted.
    "IGSEND_RETRY_BASE": "0.001",
    "IGSEND_RETRY_CAP": "0.001",
    # 1000/s: rate slots a millisecond apart, so admission never parks a job or waits for its slot.
    "IGSEND_TEXT_RATE": "1000",
    # FakeGraph answers POSTs only: lost answers are dead-lettered here; reconciling them is tests/test_reconcile.py
    "IGSEND_UNKNOWN_OUTCOME": "dead-letter",
}
ACCOUNTS_TOML = f"""
[accounts.shop]   # the default account's app: code 4 pauses it too
id = "104000000000001"
login = "facebook"
token_env = "TEST_SHOP_TOKEN"
[accounts.shop.limits]
text_per_second = 1000

[accounts.other]  # an account of another Meta app
id = "17841400000000009"
token = "IGQothertoken{"z" * 40}"
app_id = "other-app"
[accounts.other.limits]
text_per_second = 1000
"""


def _fresh_worker_parts() -> None:
    """Forget what a worker process builds once: settings, Redis clients, the accounts, the task's context."""
    reset_client_caches()
    registry.cache_clear()
    tasks._context = None


@pytest.fixture
def configure(private_db: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> Iterator[Callable[..., FakeGraph]]:
    """``configure(**env)``: this process as a worker with INPROCESS_ENV plus ``env``, sending through a new
    FakeGraph (returned). Call it again to change settings mid-test (as a restarted worker would)."""
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(ACCOUNTS_TOML)
    for name in ("IGSEND_UNKNOWN_OUTCOME", "IGSEND_APP_ID", "IGSEND_APP_SECRET", "IGSEND_MEDIA_RATE"):
        monkeypatch.delenv(name, raising=False)

    def setup(**env: str) -> FakeGraph:
        for name, value in {**INPROCESS_ENV, "IGSEND_ACCOUNTS_FILE": str(accounts), **env}.items():
            monkeypatch.setenv(name, value)
        _fresh_worker_parts()
        fake = FakeGraph()
        tasks.use_graph_client(fake)
        return fake

    yield setup
    _fresh_worker_parts()  # monkeypatch then restores the environment, private_db the Redis URL


@pytest.fixture
def graph(configure: Callable[..., FakeGraph]) -> FakeGraph:
    return configure()


_documents: dict[str, dict] = {}  # a delivered job keeps no text: the message each job was sent with


def attempt(job: Job) -> EagerResult:
    """One copy of the job's Celery message run by this process, as a worker would run it."""
    if job.id not in _documents:
        _documents[job.id] = job.info()["message"]
    return tasks.send_message.apply(args=[_documents[job.id]], task_id=job.id)


def send(recipient: str, *, account: str = "default", text: str = "hello") -> tuple[Job, EagerResult]:
    """Enqueue a text through the producer library (record and all), then run its message once."""
    job = producers.send_text(recipient, text, account=account)
    return job, attempt(job)


def failures(r: redis_lib.Redis, job: Job) -> int:
    """Failed attempts counted toward the give-up limit (throttling is not counted)."""
    return int(r.hget(job_key(job.id), "failures") or 0)


def stat(r: redis_lib.Redis, name: str) -> int:
    return int(r.hget(STATS_KEY, name) or 0)


# --- delivered ----------------------------------------------------------------------------------------------


def test_a_delivery_records_the_result_and_one_attempt(graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    job, outcome = send("alice", text="hi there")
    assert outcome.state == "SUCCESS"
    assert outcome.result["recipient_id"] == "alice" and outcome.result["attempts"] == 1
    info = job.info()
    assert info["status"] == "delivered" and info["attempts"] == 1
    assert info["result"]["recipient_id"] == "alice" and info["result"]["message_id"].startswith("mid.fake")
    assert [a["outcome"] for a in info["attempt_log"]] == ["delivered"]
    assert graph.posts == [("default", {"recipient": {"id": "alice"}, "message": {"text": "hi there"}})]
    # Nothing left for the sweeper or a redelivery to act on: no lock, not in flight, not due again.
    assert not private_db.exists(lock_key(job.id))
    assert private_db.zscore(INFLIGHT_KEY, job.id) is None
    assert private_db.zscore(DELAYED_KEY, job.id) is None


def test_a_chunks_deliveries_are_recorded_once_each_after_redis_lost_its_scripts(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    # The chunk records its deliveries with EVALSHA in one pipeline: after a restart, a failover or SCRIPT FLUSH,
    # Redis answers NOSCRIPT to each call and has run none; they go again once the script is loaded, once each.
    from workers import chunked

    jobs = [producers.send_text(f"flushed{i}", "hello") for i in range(6)]
    tasks.context()  # the worker's scripts, loaded
    private_db.script_flush()
    counts = chunked.deliver(tasks.context(), "default", "text", [job.id for job in jobs])
    assert counts == {"delivered": 6, "other": 0}
    assert [job.status().value for job in jobs] == ["delivered"] * 6
    assert graph.count() == 6
    stream = [fields["id"] for _, fields in private_db.xrange(OUTCOMES_KEY) if fields["status"] == "delivered"]
    assert sorted(stream) == sorted(job.id for job in jobs)  # one outcome each: none recorded twice


def test_a_redelivered_delivered_job_is_done_without_a_second_post(graph: FakeGraph,
                                                                   private_db: redis_lib.Redis) -> None:
    job, _ = send("bob")
    again = attempt(job)  # what the broker's redelivery of the same message looks like
    assert again.state == "IGNORED"
    assert graph.count() == 1
    assert job.info()["attempts"] == 1
    assert stat(private_db, "skipped_redeliveries_total") == 1


def test_metas_message_id_leads_back_to_its_job_while_the_record_lasts_in_one_shared_hash(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    from igsend.core import sent

    before = set(private_db.keys("igsend:*"))
    jobs = [send(f"reader{i}")[0] for i in range(5)]
    added = set(private_db.keys("igsend:*")) - before
    [index] = [key for key in added if key.startswith("igsend:sent:")]  # one hash for the account's hour
    assert {key for key in added if any(job.id in key for job in jobs)} == {f"igsend:done:{job.id}" for job in jobs}
    assert not [key for key in added if key.startswith("igsend:mid:")]
    for job in jobs:
        assert sent.job_of(private_db, "default", job.info()["result"]["message_id"], delivered_ttl=86400) == job.id
    assert private_db.ttl(index) > max(private_db.ttl(f"igsend:done:{job.id}") for job in jobs) > 0
    assert sent.job_of(private_db, "default", "mid.never-sent", delivered_ttl=86400) is None
    # A field that names a job whose record holds another message id (two ids with one digest) links nothing.
    private_db.hset(index, sent.digest("mid.lookalike"), sent.compact_job_id(jobs[0].id))
    assert sent.job_of(private_db, "default", "mid.lookalike", delivered_ttl=86400) is None


def test_the_sent_hash_and_the_days_series_expire_whatever_the_minutes_first_delivery_was(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    """Their TTLs are set once a minute, not at every delivery: a minute that begins with a delivery Meta gives no
    message id (a typing indicator) still leaves no key without a TTL."""
    from igsend.core import sent, series

    graph.answer("typist", GraphResponse(200, {"recipient_id": "typist"}, {}, 0.01))
    for stale in private_db.keys("igsend:series:*") + private_db.keys("igsend:sent:*"):
        private_db.delete(stale)
    typing = producers.sender_action("typist", "typing_on")
    texts = [producers.send_text("typist", "one"), producers.send_text("typist", "two")]
    for job in (typing, *texts):
        attempt(job)
    written = private_db.keys("igsend:sent:*") + private_db.keys("igsend:series:*")
    assert [key for key in written if key.startswith("igsend:sent:")]
    assert series.series_key("default", time.time()) in written
    for key in written:
        assert private_db.ttl(key) > 0, key
    longest_record = max(private_db.ttl(f"igsend:done:{job.id}") for job in texts)
    for index in (key for key in written if key.startswith("igsend:sent:")):
        assert private_db.ttl(index) > longest_record
        assert sent.job_of(private_db, "default", texts[1].info()["result"]["message_id"],
                           delivered_ttl=86400) == texts[1].id


def test_each_outcome_is_counted_in_the_per_minute_series_of_its_account_and_of_every_account(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    from igsend.core import series

    graph.answer("refuser", graph_error(100, 2018001, status=403))
    graph.answer("busy", graph_error(613, 2534040, headers={"Retry-After": "120"}))
    for recipient in ("ann", "bob", "cy", "refuser"):
        send(recipient)
    send("tom", account="shop")
    send("busy")

    def totals(account: str) -> tuple[int, int, int, int]:
        minutes = series.read(private_db, account, minutes=3)  # the sends may straddle a minute
        return (sum(minutes.delivered), sum(minutes.dead), sum(minutes.throttled),
                sum(sum(buckets) for buckets in minutes.latency))

    assert totals("default") == (3, 1, 1, 3)  # every delivered message has its latency counted once
    assert totals("shop") == (1, 0, 0, 1)
    assert totals(series.EVERY_ACCOUNT) == (4, 1, 1, 4)
    assert series.read(private_db, "default", minutes=1).latency_quantile(0.5)[-1] in (0.25, None)
    assert private_db.strlen(series.series_key("default", time.time())) <= series.DAY_BYTES
    assert 0 < private_db.ttl(series.series_key("default", time.time())) <= series.KEEP_SECONDS


def test_the_schedulers_leader_charts_what_waits_once_a_minute(private_db: redis_lib.Redis) -> None:
    from igsend.core import series
    from workers.scheduler import Scheduler

    for i in range(5):
        producers.send_text(f"w{i}", "waits in its lane")
    Scheduler(private_db, ahead=2).tick()  # two go to the Celery queue, three wait in the account's lane
    minutes = series.read(private_db, "default", minutes=2)
    assert max(minutes.waiting) == 3 and max(series.read(private_db, minutes=2).waiting) == 3


# --- transient errors, backoff and giving up ------------------------------------------------------------------


def test_a_transient_error_leaves_the_job_retrying_with_its_next_attempt_in_the_delayed_set(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    graph.answer("flaky", graph_error(2, status=500, message="(#2) Service temporarily unavailable"))
    job, outcome = send("flaky")
    assert outcome.state == "IGNORED"  # nothing final for Celery: the scheduler brings it back
    info = job.info()
    assert info["status"] == "retrying" and info["attempts"] == 1 and info["error"]["code"] == 2
    assert info["next_attempt_at"] >= info["attempt_log"][0]["at"]
    assert private_db.zscore(DELAYED_KEY, job.id) == pytest.approx(info["next_attempt_at"], abs=1e-3)
    assert failures(private_db, job) == 1
    assert not private_db.exists(lock_key(job.id))


def test_transient_errors_are_retried_until_delivered(graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    graph.answer("flaky", graph_error(2, status=500), graph_error(1, status=500))
    job, _ = send("flaky")
    attempt(job)
    outcome = attempt(job)
    assert outcome.state == "SUCCESS" and outcome.result["attempts"] == 3
    info = job.info()
    assert info["status"] == "delivered" and info["attempts"] == 3
    assert [a["outcome"] for a in info["attempt_log"]] == ["transient", "transient", "delivered"]
    assert [a["code"] for a in info["attempt_log"][:2]] == [2, 1]
    assert graph.count() == 3


def test_giving_up_after_max_attempts_dead_letters_with_every_attempt(graph: FakeGraph) -> None:
    graph.answer("down", GraphResponse(503, None, {}, 0.01), sticky=True)  # a 5xx without a Graph body
    job, _ = send("down")
    for _ in range(3):
        assert job.status().value == "retrying"
        attempt(job)
    info = job.info()
    assert info["status"] == "dead" and info["attempts"] == 4  # IGSEND_MAX_ATTEMPTS
    assert info["reason"].startswith("gave up after 4 failed attempts")
    entry = dlq.show(job.id)
    assert entry is not None and entry["status"] == "dead"
    assert [a["outcome"] for a in entry["attempts"]] == ["transient"] * 4
    # The scheduler may still bring back a copy for an earlier retry (these tests stand in for it): dead is
    # final, so that copy does nothing.
    assert attempt(job).state == "IGNORED" and graph.count() == 4


def test_an_unrecognised_error_code_gets_three_attempts_then_dies(graph: FakeGraph) -> None:
    graph.answer("odd", graph_error(99999), sticky=True)
    job, _ = send("odd")
    attempt(job)
    outcome = attempt(job)
    assert outcome.state == "FAILURE"
    assert job.info()["status"] == "dead" and job.info()["attempts"] == 3
    assert graph.count() == 3


def test_a_connect_timeout_sent_nothing_so_it_is_retried(graph: FakeGraph) -> None:
    graph.answer("unreachable", requests.ConnectTimeout("connect timed out"))
    job, _ = send("unreachable")
    assert job.info()["status"] == "retrying"
    assert attempt(job).state == "SUCCESS"
    assert [a["outcome"] for a in job.info()["attempt_log"]] == ["transient", "delivered"]


# --- permanent errors and refusals about one person ---------------------------------------------------------


@pytest.mark.parametrize(("code", "subcode"), [(100, 2018001), (551, 1545041), (10, 2534022), (613, 2018338)])
def test_permanent_errors_are_dead_after_exactly_one_post(graph: FakeGraph, private_db: redis_lib.Redis,
                                                          code: int, subcode: int) -> None:
    graph.answer("gone", graph_error(code, subcode), sticky=True)
    job, outcome = send("gone", text="nobody home")
    assert outcome.state == "FAILURE" and "permanent" in str(outcome.result)
    info = job.info()
    assert info["status"] == "dead" and info["attempts"] == 1
    assert info["error"]["code"] == code and info["error"]["subcode"] == subcode
    assert "permanent" in info["reason"]
    assert private_db.zscore(DELAYED_KEY, job.id) is None  # no retry is coming
    entry = dlq.show(job.id)
    assert entry["recipient"] == "gone" and entry["account"] == "default"
    assert entry["message"]["text"] == "nobody home"
    assert [a["code"] for a in entry["attempts"]] == [code]
    assert entry["attempts"][0]["fbtrace_id"] == "AfakeTrace123"
    assert graph.count() == 1


@pytest.mark.parametrize(("code", "subcode"), [(200, 1545041), (200, 2018028), (10, 2018065), (551, 1545041)])
def test_a_persons_refusal_dead_letters_that_message_only(graph: FakeGraph, code: int, subcode: int) -> None:
    graph.answer("refuser", graph_error(code, subcode, status=403), sticky=True)
    refused, outcome = send("refuser")
    assert outcome.state == "FAILURE" and refused.status().value == "dead"
    assert state("default")["health"] == "healthy" and state("default")["held"] == 0
    for i in range(3):
        job, _ = send(f"customer{i}")
        assert job.status().value == "delivered"
    assert graph.count() == 4


def test_a_token_in_metas_error_text_never_reaches_the_record_or_the_dlq(graph: FakeGraph) -> None:
    graph.answer("leaky", graph_error(100, 2018001,
                                      message=f"(#100) Invalid parameter for access_token {TOKEN} (echoed)"))
    job, outcome = send("leaky")
    stored = json.dumps(job.info()) + json.dumps(dlq.show(job.id)) + str(outcome.result)
    assert TOKEN not in stored and "[redacted]" in stored


# --- throttling -------------------------------------------------------------------------------------------------


def test_throttling_pauses_the_account_without_counting_a_failure(graph: FakeGraph,
                                                                   private_db: redis_lib.Redis) -> None:
    graph.answer("busy", graph_error(613, 2534040, headers={"Retry-After": "120"}))
    before = time.time()
    job, _ = send("busy")
    info = job.info()
    assert info["status"] == "retrying" and [a["outcome"] for a in info["attempt_log"]] == ["throttled"]
    assert failures(private_db, job) == 0  # Meta's limit is not the message's fault
    paused_until = state("default")["paused_until"]
    assert paused_until is not None and before + 120 <= paused_until <= time.time() + 120
    assert info["next_attempt_at"] == pytest.approx(paused_until, abs=1e-3)

    other, outcome = send("someone-else")  # the whole account waits, not only the throttled message
    assert outcome.state == "IGNORED" and other.status().value == "retrying"
    assert other.info()["reason"] == "account paused by Meta throttling"
    assert private_db.zscore(DELAYED_KEY, other.id) == pytest.approx(paused_until, abs=1e-3)
    assert attempt(job).state == "IGNORED"  # a copy before the pause ends is early: no POST
    assert graph.count() == 1

    assert mark_healthy("default") == 2  # an operator lifts the pause: both are due now
    assert attempt(job).state == "SUCCESS" and attempt(other).state == "SUCCESS"
    assert failures(private_db, job) == 0 and job.info()["attempts"] == 2
    assert graph.count() == 3


def test_code_4_pauses_every_account_of_the_app_and_no_other(graph: FakeGraph) -> None:
    graph.answer("appwide", graph_error(4, message="(#4) Application request limit reached",
                                        headers={"Retry-After": "60"}))
    job, _ = send("appwide")
    assert job.status().value == "retrying"
    assert state("default")["paused_until"] is not None
    assert state("shop")["paused_until"] is not None  # same app, never called: paused all the same
    assert state("other")["paused_until"] is None  # another app's limit is its own
    held_back, _ = send("shop-customer", account="shop")
    assert held_back.status().value == "retrying" and graph.count("shop-customer") == 0
    elsewhere, _ = send("other-customer", account="other")
    assert elsewhere.status().value == "delivered"


def test_usage_headers_near_the_limit_slow_the_account_down(graph: FakeGraph) -> None:
    busy = GraphResponse(200, {"recipient_id": "r", "message_id": "mid.1"},
                         {"X-App-Usage": '{"call_count":95,"total_time":10,"total_cputime":10}'}, 0.01)
    graph.answer("r", busy)
    send("r")
    slowdown = state("default").get("slowdown")
    assert slowdown is not None and 0 < slowdown < 1


# --- the account's health: broken tokens, redirects, the circuit breaker --------------------------------------


def test_an_expired_token_breaks_the_account_and_holds_the_next_job(graph: FakeGraph,
                                                                    private_db: redis_lib.Redis) -> None:
    graph.answer("victim", graph_error(190, 463, message="Error validating access token: Session has expired"))
    first, outcome = send("victim")
    assert outcome.state == "FAILURE" and first.status().value == "dead" and dlq.show(first.id) is not None
    account = state("default")
    assert account["health"] == "broken" and account["error"]["code"] == 190
    held, outcome = send("waits-for-the-fix")
    assert outcome.state == "IGNORED" and held.status().value == "queued"
    assert private_db.zrange(held_key("default"), 0, -1) == [held.id]
    assert graph.count() == 1  # the held job never reached Meta
    shop, _ = send("shop-customer", account="shop")  # other accounts keep going
    assert shop.status().value == "delivered"


def test_a_redirect_is_never_followed_and_breaks_the_account(graph: FakeGraph) -> None:
    graph.answer("moved", GraphResponse(302, None, {"Location": "https://elsewhere.example/messages"}, 0.01))
    job, _ = send("moved")
    assert job.status().value == "dead" and job.info()["error"]["class"] == "redirect"
    assert state("default")["health"] == "broken" and "elsewhere.example" in state("default")["reason"]
    assert graph.count() == 1


SETUP_ERROR = graph_error(100, message="Unsupported request - method type: post")


def test_the_same_setup_error_for_five_recipients_trips_the_breaker_and_holds_them(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    jobs = []
    for i in range(5):
        graph.answer(f"setup{i}", SETUP_ERROR)
        jobs.append(send(f"setup{i}")[0])
        if i < 4:  # alone, each is one message's problem
            assert jobs[-1].status().value == "dead" and state("default")["health"] == "healthy"
    account = state("default")
    assert account["health"] == "broken"
    assert "circuit breaker" in account["reason"] and "Unsupported request" in account["reason"]
    assert account["held"] == 5  # the four dead-lettered before the trip came back out of the DLQ
    assert dlq.list_entries() == []
    assert all(job.status().value == "queued" for job in jobs)
    later, _ = send("bystander")
    assert later.status().value == "queued" and state("default")["held"] == 6
    assert graph.count() == 5
    assert mark_healthy("default") == 6
    assert set(private_db.zrange(DELAYED_KEY, 0, -1)) >= {job.id for job in [*jobs, later]}


def test_a_delivery_in_between_proves_the_setup_and_resets_the_breaker(graph: FakeGraph) -> None:
    for i in range(4):
        graph.answer(f"early{i}", SETUP_ERROR)
        send(f"early{i}")
    assert send("fine")[0].status().value == "delivered"
    for i in range(4):
        graph.answer(f"late{i}", SETUP_ERROR)
        send(f"late{i}")
    assert state("default")["health"] == "healthy"
    assert len(dlq.list_entries()) == 8


def test_one_recipient_failing_five_times_is_that_persons_problem(graph: FakeGraph) -> None:
    graph.answer("stubborn", SETUP_ERROR, sticky=True)
    for _ in range(5):
        send("stubborn")
    assert state("default")["health"] == "healthy"
    assert len(dlq.list_entries()) == 5


# --- unknown outcomes: the POST may have gone out -------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    GraphResponse(200, {}, {}, 0.01),
    GraphResponse(200, {"message_id": "mid.no-recipient"}, {}, 0.01),
    GraphResponse(200, None, {}, 0.01),  # a body that is not JSON
], ids=["empty", "no-recipient-id", "not-json"])
def test_a_2xx_without_a_recipient_id_is_unknown_and_not_resent(graph: FakeGraph, answer: GraphResponse) -> None:
    graph.answer("maybe", answer)
    job, outcome = send("maybe")
    assert outcome.state == "FAILURE" and "unknown" in str(outcome.result)
    info = job.info()
    assert info["status"] == "unknown" and info["attempts"] == 1
    assert dlq.show(job.id)["status"] == "unknown"
    assert attempt(job).state == "IGNORED" and graph.count() == 1


@pytest.mark.parametrize("error", [
    requests.ReadTimeout("read timed out"),
    SendDeadlineExceeded("no complete answer within the send deadline (5 s)"),
    requests.ConnectionError("connection reset by peer"),
], ids=["read-timeout", "send-deadline", "connection-reset"])
def test_an_answer_lost_after_sending_is_unknown_and_not_resent(graph: FakeGraph,
                                                                error: requests.RequestException) -> None:
    graph.answer("lost", error)
    job, _ = send("lost")
    info = job.info()
    assert info["status"] == "unknown" and info["attempts"] == 1
    assert info["attempt_log"][0]["outcome"] == "unknown"
    assert dlq.show(job.id)["status"] == "unknown"
    assert attempt(job).state == "IGNORED" and graph.count() == 1


def test_an_unexpected_exception_while_sending_is_unknown(graph: FakeGraph) -> None:
    class Boom(GraphClient):  # e.g. a bug in the client after the request went out
        def __init__(self) -> None:
            self.calls = 0

        def send(self, account: Account, body: dict[str, Any], *, deadline: float | None = None) -> GraphResponse:
            self.calls += 1
            raise RuntimeError(f"crashed while holding {account.token}")

    boom = Boom()
    tasks.use_graph_client(boom)
    job, outcome = send("crash")
    assert job.info()["status"] == "unknown" and boom.calls == 1
    assert "RuntimeError" in job.info()["reason"] and TOKEN not in json.dumps(job.info()) + str(outcome.result)


def test_the_resend_policy_retries_a_lost_answer(configure: Callable[..., FakeGraph]) -> None:
    graph = configure(IGSEND_UNKNOWN_OUTCOME="resend")
    graph.answer("lost", requests.ReadTimeout("read timed out"))
    job, _ = send("lost")
    assert job.status().value == "retrying"
    assert attempt(job).state == "SUCCESS" and graph.count() == 2


def _admitted_by_a_worker_that_died(job: Job, r: redis_lib.Redis) -> None:
    """Admission let the job POST (inflight set, lock taken), then its worker vanished and the lock expired."""
    message = job.info()["message"]
    admission = tasks.context().admitter.admit(job.id, message, "text", 1000.0)
    assert admission.action == "go"
    r.delete(lock_key(job.id))


def test_an_orphaned_inflight_job_ends_unknown_without_a_post(graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    job = producers.send_text("orphan", "was it sent?")
    _admitted_by_a_worker_that_died(job, private_db)
    outcome = attempt(job)  # the broker hands the message to another worker
    assert outcome.state == "FAILURE"
    info = job.info()
    assert info["status"] == "unknown" and info["reason"].startswith("outcome unknown")
    assert dlq.show(job.id)["status"] == "unknown"
    assert stat(private_db, "orphaned_total") == 1
    assert graph.count() == 0


def test_an_orphaned_job_is_resent_under_the_resend_policy(configure: Callable[..., FakeGraph],
                                                           private_db: redis_lib.Redis) -> None:
    graph = configure(IGSEND_UNKNOWN_OUTCOME="resend")
    job = producers.send_text("orphan", "send it again")
    _admitted_by_a_worker_that_died(job, private_db)
    assert attempt(job).state == "SUCCESS"
    assert job.info()["attempts"] == 2 and graph.count() == 1


def test_a_copy_arriving_while_another_is_in_flight_stands_back(graph: FakeGraph,
                                                               private_db: redis_lib.Redis) -> None:
    job = producers.send_text("racing", "only once")
    tasks.context().admitter.admit(job.id, job.info()["message"], "text", 1000.0)  # a live POST holds the lock
    assert attempt(job).state == "IGNORED"
    assert job.status().value == "sending" and graph.count() == 0


# --- replica acks: a failover must not make a sent message look unsent ----------------------------------------


def test_an_admission_no_replica_confirmed_is_not_sent_and_comes_back(configure: Callable[..., FakeGraph],
                                                                       private_db: redis_lib.Redis) -> None:
    configure()
    job = producers.send_text("carol", "only with a witness")  # queued with acks off: this Redis has no replica
    graph = configure(IGSEND_REDIS_REPLICA_ACKS="1", IGSEND_REDIS_REPLICA_TIMEOUT="0.05")
    assert attempt(job).state == "IGNORED"
    assert graph.count() == 0
    info = job.info()
    assert info["status"] == "retrying" and info["attempts"] == 0
    assert "0 of the 1 replica(s)" in info["reason"]
    assert private_db.zscore(DELAYED_KEY, job.id) is not None  # the scheduler brings it back
    assert not private_db.exists(lock_key(job.id)) and private_db.zscore(INFLIGHT_KEY, job.id) is None
    assert stat(private_db, "unreplicated_admissions_total") == 1
    graph = configure(IGSEND_REDIS_REPLICA_ACKS="0")  # the replicas are back (here: acks off); due in a second
    time.sleep(1.1)
    assert attempt(job).state == "SUCCESS"
    assert graph.count() == 1 and job.info()["attempts"] == 1


def test_recording_a_delivery_twice_keeps_one_record_and_clears_a_stale_unknown(
        graph: FakeGraph, private_db: redis_lib.Redis) -> None:
    from igsend.core.store import OUTCOMES_KEY

    job = producers.send_text("dave", "recorded after a failover")
    _admitted_by_a_worker_that_died(job, private_db)
    assert attempt(job).state == "FAILURE"  # another copy found it orphaned while the record was out of reach
    assert dlq.show(job.id)["status"] == "unknown"
    outcomes = tasks.context().outcomes
    entry = {"attempt": 1, "at": time.time(), "latency_ms": 12.0, "outcome": "delivered"}
    outcomes.delivered(job.id, {"recipient_id": "dave", "message_id": "mid.first"}, entry)
    outcomes.delivered(job.id, {"recipient_id": "dave", "message_id": "mid.first"}, entry)  # the retry
    info = job.info()
    assert info["status"] == "delivered" and info["result"]["message_id"] == "mid.first"
    assert dlq.show(job.id) is None
    delivered = [f for _, f in private_db.xrange(OUTCOMES_KEY) if f["id"] == job.id and f["status"] == "delivered"]
    assert len(delivered) == 1


def test_a_delivery_the_replicas_never_confirm_is_recorded_and_acknowledged_after_the_patience(
        configure: Callable[..., FakeGraph], private_db: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    configure()
    job = producers.send_text("erin", "sent, then no replica answers")
    graph = configure(IGSEND_REDIS_REPLICA_ACKS="1", IGSEND_REDIS_REPLICA_TIMEOUT="0.05")
    monkeypatch.setattr(tasks, "RECORD_PATIENCE", 1.0)
    tasks.context().admitter.replica_acks = 0  # the admission was confirmed; the replica left right after
    started = time.monotonic()
    assert attempt(job).state == "SUCCESS"  # acknowledged: the POST went out, the record is on the primary
    assert time.monotonic() - started >= 1.0  # it kept writing the record for the patience first
    assert graph.count() == 1 and job.info()["status"] == "delivered"
    assert stat(private_db, "unconfirmed_deliveries_total") == 1
    assert attempt(job).state == "IGNORED" and graph.count() == 1  # a redelivery finds it delivered
