"""The first hour (issue 17): a newcomer never has to wonder what happened.

Nobody listening (no worker alive) is said in one line wherever a message is queued or looked at; an account
no worker serves is refused before it is queued; the workers' announcement carries their accounts (never a
token). Real Redis databases of the suite's server, real worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from igsend.core import presence
from igsend.core.errors import UnknownAccount
from igsend.local.processes import Service
from tests.conftest import ALL_TOKENS, TOKEN, reset_client_caches, wait_until, worker_env
from tests.test_cli import igsend

API_KEY = "first-hour-key"


def _database(redis_url: str, db: int) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def use_db() -> Iterator:
    """``use_db(url)``: this process's producers (and the in-process API) talk to ``url`` for the test."""
    previous = os.environ.get("IGSEND_REDIS_URL")

    def use(url: str) -> None:
        os.environ["IGSEND_REDIS_URL"] = url
        reset_client_caches()
        presence.forget()

    yield use
    if previous is not None:
        os.environ["IGSEND_REDIS_URL"] = previous
    reset_client_caches()
    presence.forget()


@pytest.fixture
def fresh(redis_url: str) -> Iterator[str]:
    """A database no worker ever announced itself in: a fresh install."""
    url = _database(redis_url, 4)
    yield url
    redis_lib.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def served(redis_url: str, sandbox: str, accounts_file: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Service]]:
    """A database with one live worker serving default, shop and slow."""
    from igsend.local.processes import start_worker

    url = _database(redis_url, 3)
    service = start_worker(env=worker_env(url, sandbox, accounts_file),
                           log_path=tmp_path_factory.mktemp("logs") / "first-hour-worker.log", concurrency=4)
    yield url, service
    service.stop()
    redis_lib.Redis.from_url(url).flushdb()


def _api(use_db, url: str):
    from producers.api import create_app

    use_db(url)
    return create_app(api_keys=[API_KEY]).test_client()


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def no_worker(url: str) -> str:
    """The no-worker warning as a process using ``url`` says it (it names that Redis)."""
    from igsend.core.settings import using_redis

    with using_redis(url):
        return presence.no_worker_warning()
TEXT = {"kind": "text", "recipient": "newcomer", "text": "hi"}


# --- 1. nobody is listening ------------------------------------------------------------------------------------

def test_nobody_listening_is_said_once_where_a_message_is_queued_or_looked_at(fresh: str, use_db) -> None:
    env = {"IGSEND_REDIS_URL": fresh}
    sent = igsend("send", "text", "newcomer", "hi", env=env)
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()
    assert len(job_id) == 36  # still queued: a worker started later sends it
    assert sent.stderr.strip().splitlines() == [f"warning: {no_worker(fresh)}"]
    assert "`igsend worker`" in sent.stderr and "`igsend up`" in sent.stderr

    status = igsend("status", job_id, env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "queued"
    assert status.stderr.strip().splitlines() == [f"warning: {no_worker(fresh)}"]

    waited = igsend("send", "text", "newcomer", "hi", "--wait", "--timeout", "0.5", env=env)
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["status"] == "queued"
    assert no_worker(fresh) in waited.stderr.splitlines()[0]
    assert waited.stderr.splitlines()[-1].startswith("error: ") and "igsend worker" in waited.stderr.splitlines()[-1]

    client = _api(use_db, fresh)
    posted = client.post("/v1/messages", json=TEXT, headers=AUTH)
    assert posted.status_code == 202
    assert posted.get_json()["warnings"] == [no_worker(fresh)]
    health = client.get("/healthz")
    assert health.status_code == 200  # not red because no worker is up: reported
    body = health.get_json()
    assert (body["ok"], body["redis"], body["workers"]) == (True, True, 0)
    assert body["workers_warning"] == no_worker(fresh)


def test_a_live_worker_announces_itself_and_its_accounts_without_tokens(served, use_db) -> None:
    url, service = served
    client = redis_lib.Redis.from_url(url, decode_responses=True)
    keys = sorted(client.scan_iter("igsend:workers:*"))
    assert len(keys) == 1 and keys[0].startswith(f"igsend:workers:igsend-{service.process.pid}-")
    assert 0 < client.ttl(keys[0]) <= presence.HEARTBEAT_TTL
    announced = json.loads(client.get(keys[0]))
    assert sorted(a["name"] for a in announced["accounts"]) == ["default", "shop", "slow"]
    shop = next(a for a in announced["accounts"] if a["name"] == "shop")
    assert shop == {"name": "shop", "id": "104000000000001", "login": "facebook", "app_id": "default",
                    "budgets": {"text": 300.0, "media": 10.0, "private_reply": 750 / 3600, "conversations": 2.0},
                    "ordered": False}
    stored = json.dumps([client.get(keys[0]), client.hgetall(presence.KNOWN_ACCOUNTS_KEY)])
    assert not any(token in stored for token in ALL_TOKENS)

    env = {"IGSEND_REDIS_URL": url}
    sent = igsend("send", "text", "newcomer", "hi", "--wait", env=env)
    assert sent.returncode == 0 and sent.stderr == ""  # no warning when a worker listens
    api = _api(use_db, url)
    assert api.post("/v1/messages", json=TEXT, headers=AUTH).get_json()["warnings"] == []
    assert api.get("/healthz").get_json()["workers"] == 1


# --- 2. an account no worker knows is refused before it is queued -----------------------------------------------

def test_an_account_no_worker_serves_is_refused_everywhere_before_it_is_queued(served, use_db, tmp_path) -> None:
    url, _ = served
    env = {"IGSEND_REDIS_URL": url}
    raw = redis_lib.Redis.from_url(url, decode_responses=True)
    expected = ("account: no igsend worker serves the account 'shoe-shop' (accounts: default, shop, slow); "
                "add it to the workers' IGSEND_ACCOUNTS_FILE and restart them")

    cli = igsend("send", "text", "newcomer", "hi", "--account", "shoe-shop", env=env)
    assert (cli.returncode, cli.stdout, cli.stderr.strip()) == (2, "", f"error: {expected}")

    use_db(url)
    import producers

    with pytest.raises(UnknownAccount) as raised:
        producers.send_text("newcomer", "hi", account="shoe-shop")
    assert isinstance(raised.value, producers.IgsendError) and isinstance(raised.value, producers.InvalidMessage)
    assert raised.value.known == ["default", "shop", "slow"]
    batch = producers.send_many([TEXT, {**TEXT, "account": "shoe-shop"}, {**TEXT, "account": "shop"}])
    assert batch.new == [0, 2] and str(batch.errors[1]) == expected

    api = _api(use_db, url)
    posted = api.post("/v1/messages", json={**TEXT, "account": "shoe-shop"}, headers=AUTH)
    assert posted.status_code == 422
    assert posted.get_json()["errors"] == {"json": {"account": [expected.removeprefix("account: ")]}}

    lines = tmp_path / "bulk.jsonl"
    lines.write_text("\n".join(json.dumps(doc) for doc in (TEXT, {**TEXT, "account": "shoe-shop"})) + "\n")
    bulk = igsend("send-bulk", str(lines), "--json", env=env)
    assert json.loads(bulk.stdout)["queued"] == 1
    assert f"line 2: {expected}" in " ".join(bulk.stderr.split())  # rich wraps the line at 80 columns
    # Nothing for shoe-shop anywhere (other tests' jobs share this Redis, so look for the account, not a count).
    accounts = {raw.hget(key, "account") for key in raw.scan_iter("igsend:job:*") if not key.endswith(":attempts")}
    accounts |= {json.loads(raw.get(key) or "{}").get("a") for key in raw.scan_iter("igsend:done:*")}
    assert "shoe-shop" not in accounts


def test_accounts_list_shows_every_served_account_even_when_healthy(served) -> None:
    url, _ = served
    # the worker asks the sandbox's debug_token about shop's Page token once it is ready (docs/tokens.md)
    wait_until(lambda: redis_lib.Redis.from_url(url).hget("igsend:token:shop", "source") == b"debug_token")
    listed = igsend("accounts", "list", env={"IGSEND_REDIS_URL": url})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ACCOUNT", "ID", "LOGIN", "TEXT/S", "MEDIA/S", "WORKERS", "HELD", "TOKEN", "EXPIRES",
                                "STATE"]
    assert [line.split() for line in lines[1:]] == [
        ["default", "17841400000000001", "instagram", "100", "10", "1", "0", "unknown", "healthy"],
        ["shop", "104000000000001", "facebook", "300", "10", "1", "0", "never", "expires", "healthy"],
        ["slow", "17841400000000003", "instagram", "4", "1", "1", "0", "unknown", "healthy"],
    ]
    as_json = json.loads(igsend("accounts", "list", "--json", env={"IGSEND_REDIS_URL": url}).stdout)
    assert [row["account"] for row in as_json] == ["default", "shop", "slow"]
    assert as_json[0] | {"budgets": None, "token": None} == {
        "account": "default", "id": "17841400000000001", "login": "instagram", "app_id": "default",
        "budgets": None, "health": "healthy", "paused_until": None, "held": 0, "workers": 1, "token": None}
    assert [(row["token"]["expires_at"], row["token"]["source"]) for row in as_json] == [
        (None, None), (0, "debug_token"), (None, None)]
    assert TOKEN not in listed.stdout


def test_when_every_worker_stops_known_accounts_queue_with_the_hint_and_unknown_ones_are_refused(served) -> None:
    url, service = served
    service.stop()  # a warm shutdown withdraws the heartbeat at once
    env = {"IGSEND_REDIS_URL": url}
    assert not list(redis_lib.Redis.from_url(url).scan_iter("igsend:workers:*"))
    known = igsend("send", "text", "newcomer", "hi", "--account", "shop", env=env)
    assert known.returncode == 0 and known.stderr.strip() == f"warning: {no_worker(url)}"
    unknown = igsend("send", "text", "newcomer", "hi", "--account", "shoe-shop", env=env)
    assert unknown.returncode == 2 and "'shoe-shop' (accounts: default, shop, slow)" in unknown.stderr
    listed = igsend("accounts", "list", env=env)
    assert [line.split()[5] for line in listed.stdout.splitlines()[1:]] == ["0", "0", "0"]
    assert listed.stderr.strip() == f"warning: {no_worker(url)}"


def test_a_fresh_install_queues_any_account_with_the_hint(fresh: str, use_db) -> None:
    use_db(fresh)
    import producers

    job = producers.send_text("newcomer", "hi", account="not-yet-configured")
    assert job.status().value == "queued"
    assert igsend("accounts", "list", env={"IGSEND_REDIS_URL": fresh}).stdout.startswith("no accounts yet")
