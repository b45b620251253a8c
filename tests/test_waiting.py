"""Waiting for a job's end (issue 37): ``GET /v1/messages/{id}?wait=N``, ``job.result()``/``job.wait()``; woken by
the outcome stream, never by a loop of status reads. Every way a job ends puts an entry on that stream.

Nothing here bounds time: a test shows the waiter was waiting (registered, the job not final just before it was let
go) and what it answered, and counts Redis commands on a Redis of its own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis as redis_lib

import producers
from igsend.core import account_state, records, waiting
from igsend.core.store import OUTCOMES_KEY, held_key
from producers.api import create_app
from tests.conftest import environment, wait_until

KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
GUARD = 120  # seconds: a hang guard only, far past anything a slow machine needs


def _waiters() -> int:
    return waiting.reader().waiting()


def _outcomes(client: redis_lib.Redis) -> list[dict[str, Any]]:
    return [fields for _, fields in client.xrange(OUTCOMES_KEY)]


# -- every end is on the outcome stream ------------------------------------------------------------------------------


def test_a_cancel_is_announced_on_the_outcome_stream(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-cancel", "never sent")
    job.cancel()
    [entry] = _outcomes(private_db)
    assert {k: entry[k] for k in ("id", "status", "account", "kind")} == {
        "id": job.id, "status": "cancelled", "account": "default", "kind": "text"}


def test_a_revoked_raw_job_without_record_is_announced_too(private_db: redis_lib.Redis) -> None:
    # workers/raw.py's revoke handler: records.cancel(create=True) on a message no worker took yet
    records.cancel(private_db, "raw-revoked", reason="revoked", record_ttl=60, create=True)
    assert [(e["id"], e["status"]) for e in _outcomes(private_db)] == [("raw-revoked", "cancelled")]


def test_an_abandoned_publish_is_announced(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-abandon", "publish failed")
    records.abandon(private_db, [job.id, "no-record"], "publish failed")
    assert [(e["id"], e["status"], e["account"]) for e in _outcomes(private_db)] == [(job.id, "cancelled", "default")]


def test_a_refused_cancel_announces_nothing(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-twice", "x")
    job.cancel()
    with pytest.raises(producers.CancelRefused):
        job.cancel()
    assert len(_outcomes(private_db)) == 1


# -- job.wait() / job.result() ---------------------------------------------------------------------------------------


def test_result_wakes_on_the_end_without_a_command_per_poll_interval(tmp_path) -> None:
    from igsend.local.embedded_redis import start_redis

    server = start_redis(tmp_path / "redis")  # a Redis of its own: its commandstats count this test's commands only
    try:
        with environment(IGSEND_REDIS_URL=server.url):
            client = redis_lib.Redis.from_url(server.url, decode_responses=True)
            job = producers.send_text("waiting-count", "held: no worker serves this Redis")
            reader = waiting.reader()
            reads_before = reader.reads
            with ThreadPoolExecutor(1) as pool:
                outcome = pool.submit(lambda: pytest.raises(producers.JobCancelled, job.result, timeout=GUARD))
                wait_until(lambda: reader.waiting() == 1 and reader.reads > reads_before, timeout=GUARD)
                wait_until(lambda: any(c.get("cmd") == "xread" and "b" in c.get("flags", "")
                                       for c in client.client_list()), timeout=GUARD)
                before = client.info("commandstats")
                threading.Event().wait(2.0)  # the old loop made >= 4 status reads (8 commands) in this time
                during = client.info("commandstats")
                assert job.status() is producers.JobStatus.QUEUED  # not final just before it is let go
                job.cancel()
                raised = outcome.result(timeout=GUARD)
            after = client.info("commandstats")
    finally:
        server.stop()
    assert "cancelled" in str(raised.value)
    calls = _delta(before, during)
    assert calls.get("hget", 0) == calls.get("exists", 0) == 0, calls  # no status read while nothing happened
    assert sum(calls.values()) <= 1, calls  # at most the reader's next XREAD (it blocks 10 s)
    print(f"commands while waiting: {calls}; over the whole wait and cancel: {_delta(before, after)}")


@pytest.mark.parametrize("ends_with_a_waiter", [True, False], ids=["a-waiter", "nobody-waiting"])
def test_redis_going_away_wakes_the_waiters_and_is_no_news_when_none_wait(tmp_path, caplog,
                                                                          ends_with_a_waiter: bool) -> None:
    """A waiter is woken (it reads its status itself) and the failed read logged; with nobody waiting, a Redis
    stopped under the blocked reader (a process and its Redis stopping together, as `igsend demo` ends) logs
    nothing and the reader ends."""
    from igsend.local.embedded_redis import start_redis

    def readers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("igsend-outcomes-reader")}

    server = start_redis(tmp_path / "redis")
    with environment(IGSEND_REDIS_URL=server.url):
        reader = waiting.reader()
        event = reader.register("some-job")
        wait_until(lambda: reader.reads > 0, timeout=GUARD)  # the reader blocks in XREAD
        if not ends_with_a_waiter:
            reader.unregister("some-job", event)
        before = readers()
        server.stop()
        if ends_with_a_waiter:
            assert event.wait(GUARD)  # woken: Redis is away, the waiter reads its status itself
            reader.unregister("some-job", event)
            wait_until(lambda: "reading igsend:outcomes failed" in caplog.text, timeout=GUARD)
        wait_until(lambda: not (before & readers()), timeout=GUARD)  # the reader ends once nobody waits
        if not ends_with_a_waiter:
            assert "reading igsend:outcomes failed" not in caplog.text


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    found = {}
    for key, value in after.items():
        name = key.removeprefix("cmdstat_")
        if name in ("info", "client|list"):
            continue
        change = value["calls"] - before.get(key, {"calls": 0})["calls"]
        if change:
            found[name] = change
    return found


def test_wait_accepts_poll_for_compatibility(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-poll", "x")
    job.cancel()
    assert job.wait(timeout=GUARD, poll=0.01) is producers.JobStatus.CANCELLED


def test_wait_times_out_with_the_status_then(private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-timeout", "held")
    with pytest.raises(TimeoutError, match="still queued"):
        job.wait(timeout=0.2)


def test_an_unknown_id_is_not_found_after_the_grace(private_db: redis_lib.Redis) -> None:
    assert producers.Job("no-such-job").wait(timeout=GUARD) is producers.JobStatus.NOT_FOUND
    assert _waiters() == 0  # unregistered


# -- GET /v1/messages/{id}?wait=N ------------------------------------------------------------------------------------


@pytest.fixture
def api(redis_url: str) -> Any:
    return create_app(api_keys=[KEY], max_waiting=2).test_client()


@pytest.mark.parametrize("value", ["0", "-1", "30.5", "abc", "nan", ""])
def test_wait_out_of_range_is_refused_naming_it(api: Any, private_db: redis_lib.Redis, value: str) -> None:
    job = producers.send_text("waiting-422", "x")
    answer = api.get(f"/v1/messages/{job.id}?wait={value}", headers=AUTH)
    assert answer.status_code == 422, answer.get_json()
    assert list(answer.get_json()["errors"]["query"]) == ["wait"]
    if value not in ("abc", "nan", ""):
        assert answer.get_json()["errors"]["query"]["wait"] == ["must be more than 0 and at most 30 (seconds)"]


@pytest.mark.usefixtures("worker", "clean")
def test_a_waiting_get_answers_with_the_delivery(api: Any, r: redis_lib.Redis) -> None:
    # Held for real: the account is marked broken, so the worker holds the message (queued) until it is healed.
    account_state.mark_broken("default", "held by the test", None, client=r)
    try:
        job = producers.send_text("waiting-api", "delivered while a GET waits")
        wait_until(lambda: r.zscore(held_key("default"), job.id) is not None, timeout=GUARD)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(api.get, f"/v1/messages/{job.id}?wait=30", headers=AUTH)
            wait_until(lambda: _waiters() == 1, timeout=GUARD)
            assert job.status() is producers.JobStatus.QUEUED  # not final just before it is let go
            account_state.mark_healthy("default", client=r)
            response = answer.result(timeout=GUARD)
    finally:
        account_state.mark_healthy("default", client=r)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "delivered" and body["result"]["recipient_id"] == "waiting-api"


def test_a_waiting_get_answers_with_the_cancel(api: Any, private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-api-cancel", "x")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(api.get, f"/v1/messages/{job.id}?wait=30", headers=AUTH)
        wait_until(lambda: _waiters() == 1, timeout=GUARD)
        assert job.status() is producers.JobStatus.QUEUED
        assert api.delete(f"/v1/messages/{job.id}", headers=AUTH).status_code == 200
        response = answer.result(timeout=GUARD)
    assert (response.status_code, response.get_json()["status"]) == (200, "cancelled")


def test_a_wait_ends_with_the_status_then(api: Any, private_db: redis_lib.Redis) -> None:
    job = producers.send_text("waiting-api-timeout", "x")
    response = api.get(f"/v1/messages/{job.id}?wait=0.2", headers=AUTH)
    assert (response.status_code, response.get_json()["status"]) == (200, "queued")


def test_many_waiters_share_one_reader_and_past_the_slots_answer_503(api: Any, private_db: redis_lib.Redis) -> None:
    jobs = [producers.send_text(f"waiting-many-{i}", "x") for i in range(3)]
    def xreads() -> int:  # clients of this database blocked in XREAD now (CLIENT LIST is server-wide)
        return sum(c.get("cmd") == "xread" and "b" in c.get("flags", "") and c.get("db") == "1"
                   for c in private_db.client_list())

    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(api.get, f"/v1/messages/{job.id}?wait=30", headers=AUTH) for job in jobs[:2]]
        wait_until(lambda: _waiters() == 2, timeout=GUARD)
        wait_until(lambda: xreads() == 1, timeout=GUARD)
        busy = api.get(f"/v1/messages/{jobs[2].id}?wait=30", headers=AUTH)  # max_waiting=2: both slots taken
        assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
        assert "waiting requests" in busy.get_json()["message"]
        assert api.get(f"/v1/messages/{jobs[2].id}", headers=AUTH).status_code == 200  # without wait: served
        assert xreads() == 1  # one blocking reader for both waiters
        for job in jobs[:2]:
            job.cancel()
        assert [a.result(timeout=GUARD).get_json()["status"] for a in answers] == ["cancelled", "cancelled"]


def test_wait_on_a_missing_job_is_404(api: Any, private_db: redis_lib.Redis) -> None:
    assert api.get("/v1/messages/no-such-job?wait=1", headers=AUTH).status_code == 404
