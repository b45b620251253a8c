"""Several Redis groups (IGSEND_GROUPS): two real Redis servers, a real worker for each, one producer.

Every producer path (Python, CLI, HTTP API, send-bulk) sends each message to its account's group; every job is
found again from its id alone; an account in no group is refused before anything is queued; and an account moves
from one group to the other without losing or doubling a message (docs/groups.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from click.testing import CliRunner

from tests.conftest import (
    ACCOUNT_ID,
    SHOP_PAGE_ID,
    SLOW_ACCOUNT_ID,
    environment,
    received,
    wait_until,
    worker_env,
)

KEY = "groups-test-key"
ACCOUNT_IDS = {"default": ACCOUNT_ID, "shop": SHOP_PAGE_ID, "slow": SLOW_ACCOUNT_ID}
LAYOUT = {"alpha": ["default", "shop"], "beta": ["slow"]}
MOVED = {"alpha": ["default"], "beta": ["slow", "shop"]}  # shop moves from alpha to beta
#: Nothing listens here: producers must never fall back to IGSEND_REDIS_URL when groups are configured.
NOWHERE = "redis://127.0.0.1:9/0"


def write_groups(path: Path, urls: dict[str, str], layout: dict[str, list[str]]) -> None:
    path.write_text("".join(f'[groups.{name}]\nredis_url = "{urls[name]}"\naccounts = {json.dumps(accounts)}\n\n'
                            for name, accounts in layout.items()))


@dataclass
class Grouped:
    path: Path
    urls: dict[str, str]
    sandbox: str
    accounts_file: Path
    logs: Path
    workers: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, Any] = field(default_factory=dict)

    def client(self, group: str) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.urls[group], decode_responses=True)

    def start(self, *groups: str) -> None:
        """Start (or restart) the workers of ``groups`` in parallel, each reading the groups file as it is now."""
        from igsend.local.processes import start_worker

        for group in groups:
            if group in self.workers:
                self.workers.pop(group).stop()

        def one(group: str) -> Any:
            env = worker_env(self.urls[group], self.sandbox, self.accounts_file, IGSEND_GROUPS=str(self.path),
                             IGSEND_GROUP=group)
            return start_worker(env=env, log_path=self.logs / f"worker-{group}-{time.time():.0f}.log",
                                concurrency=8)

        with ThreadPoolExecutor(len(groups)) as pool:
            self.workers.update(zip(groups, pool.map(one, groups), strict=True))


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory, sandbox: str, accounts_file: Path) -> Iterator[Grouped]:
    from igsend.core import presence, routing
    from igsend.local.embedded_redis import start_redis

    servers = {name: start_redis(tmp_path_factory.mktemp(f"redis-{name}")) for name in LAYOUT}
    setup = Grouped(tmp_path_factory.mktemp("groups") / "groups.toml", {n: s.url for n, s in servers.items()},
                    sandbox, accounts_file, tmp_path_factory.mktemp("group-logs"), servers=servers)
    write_groups(setup.path, setup.urls, LAYOUT)
    try:
        with environment(IGSEND_GROUPS=str(setup.path), IGSEND_REDIS_URL=NOWHERE):
            routing.forget()
            presence.forget()
            try:
                setup.start(*LAYOUT)
                yield setup
            finally:
                for service in setup.workers.values():
                    service.stop()
                for server in servers.values():
                    server.stop()
    finally:
        routing.forget()
        presence.forget()


def _cli(*args: str, input: bytes | None = None) -> Any:
    from igsend.cli.main import main

    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _api() -> Any:
    from producers.api import create_app

    return create_app(api_keys=[KEY]).test_client()


AUTH = {"Authorization": f"Bearer {KEY}"}


def _texts(sandbox: str, marker: str) -> Counter[tuple[str, str]]:
    """(account id, text) of every message the sandbox took whose text carries ``marker``, with how many times."""
    return Counter((m["account"], m["body"]["message"]["text"]) for m in received(sandbox)
                   if marker in str(m["body"].get("message", {}).get("text", "")))


def _group_holding(setup: Grouped, job_id: str) -> list[str]:
    """The groups whose Redis has the job's record (delivered jobs are compacted to igsend:done:ID)."""
    return [g for g in setup.urls if setup.client(g).exists(f"igsend:job:{job_id}", f"igsend:done:{job_id}")]


def test_the_groups_file_is_checked(tmp_path: Path) -> None:
    from igsend.core.errors import ConfigurationError
    from igsend.core.groups import group_named_by, job_id, load_groups

    good = tmp_path / "good.toml"
    good.write_text('[groups.eu]\nredis_url = "rediss://:pw@redis-eu:6380/0"\naccounts = ["shop"]\n'
                    '[groups.us-1]\nredis_url = "sentinel://s1:26379;sentinel://s2:26379/0"\naccounts = ["news"]\n'
                    'redis_master = "igsend-us"\n')
    loaded = load_groups(str(good))
    assert list(loaded) == ["eu", "us-1"] and loaded["us-1"].redis_master == "igsend-us"
    assert "pw" not in json.dumps(loaded["eu"].public())
    cases = {
        '[groups.eu]\nredis_url = "redis://r:6379/0"\naccounts = ["a"]\nreplicas = 2\n': "unknown field 'replicas'",
        '[groups.eu]\nredis_url = "redis://r:6379"\naccounts = ["a"]\n[groups.us]\nredis_url = "redis://s:6379"\n'
        'accounts = ["a"]\n': "'a' is also in groups.eu",
        '[groups.eu]\nredis_url = "http://r:6379"\naccounts = ["a"]\n': "scheme must be one of",
        '[groups.eu]\nredis_url = "redis://:secret@r:notaport"\naccounts = ["a"]\n': "not a Redis URL",
        '[groups.eu]\naccounts = ["a"]\n': "groups.eu.redis_url: required",
        '[groups.eu]\nredis_url = "redis://r"\naccounts = "a"\n': "groups.eu.accounts: must be a list",
        '[groups."e.u"]\nredis_url = "redis://r"\naccounts = ["a"]\n': "a group's name is",
        '[group.eu]\nredis_url = "redis://r"\n': "unknown table 'group'",
    }
    for text, expected in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigurationError) as refused:
            load_groups(str(bad))
        assert expected in str(refused.value) and "secret" not in str(refused.value)
    assert job_id(None, "4b6f1c9e-0000-4000-8000-000000000000") == "4b6f1c9e-0000-4000-8000-000000000000"
    assert group_named_by(job_id("eu", "4b6f")) == "eu" and group_named_by("4b6f1c9e-0000") is None


def test_a_worker_serves_its_group_only(tmp_path: Path, accounts_file: Path) -> None:
    from igsend.core.errors import ConfigurationError
    from igsend.core.settings import Settings
    from workers.accounts import AccountError, load_accounts

    path = tmp_path / "groups.toml"
    write_groups(path, {"alpha": "redis://a:6379/0", "beta": "redis://b:6379/2"}, LAYOUT)
    env = worker_env("redis://ignored:6379/0", "http://127.0.0.1:1", accounts_file, IGSEND_GROUPS=str(path),
                     IGSEND_GROUP="beta")
    assert list(load_accounts(env)) == ["slow"]
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        assert Settings.from_env().redis_url == "redis://b:6379/2"  # the group's Redis, not IGSEND_REDIS_URL
        os.environ["IGSEND_GROUP"] = "gamma"
        with pytest.raises(ConfigurationError, match="IGSEND_GROUP: no group 'gamma'"):
            Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    write_groups(path, {"alpha": "redis://a", "beta": "redis://b"}, {"alpha": ["default"], "beta": ["slow", "ghost"]})
    with pytest.raises(AccountError, match="'ghost' has no token on this worker"):
        load_accounts(env)


def test_one_producer_two_groups_every_message_once_and_found(grouped: Grouped) -> None:
    from producers import UnknownAccount, get_job, send_many, send_text

    marker = uuid.uuid4().hex[:8]
    jobs: dict[str, tuple[str, str]] = {}  # job id -> (account, text)

    def sent(job_id: str, account: str, text: str) -> None:
        jobs[job_id] = (account, text)

    for account in ("default", "shop", "slow"):  # the Python API
        text = f"py {account} {marker}"
        sent(send_text(f"r-{account}", text, account=account).id, account, text)
    batch = send_many([{"kind": "text", "recipient": "r-batch", "text": f"batch {a} {marker}", "account": a}
                       for a in ("slow", "default")] +
                      [{"kind": "text", "recipient": "r-batch", "text": "never", "account": "nobody"}])
    assert list(batch.invalid) == [2] and "in no group" in str(batch.invalid[2])
    for job, account in zip(batch.jobs[:2], ("slow", "default"), strict=True):
        assert job is not None
        sent(job.id, account, f"batch {account} {marker}")
    for account in ("shop", "slow"):  # the CLI
        outcome = _cli("send", "text", "r-cli", f"cli {account} {marker}", "--account", account)
        assert outcome.exit_code == 0, outcome.output
        sent(outcome.output.strip(), account, f"cli {account} {marker}")
    api = _api()
    for account in ("default", "slow"):  # the HTTP API
        answer = api.post("/v1/messages", headers=AUTH, json={"kind": "text", "recipient": "r-api",
                                                              "text": f"api {account} {marker}", "account": account})
        assert answer.status_code == 202, answer.json
        assert answer.json["warnings"] == []  # the group's worker is alive
        sent(answer.json["id"], account, f"api {account} {marker}")
    lines = b"".join(json.dumps({"kind": "text", "recipient": "r-bulk", "text": f"bulk {a} {marker}",
                                 "account": a}).encode() + b"\n" for a in ("shop", "slow"))
    bulk = _cli("send-bulk", "-", "--json", "--timeout", "30", input=lines)  # follows both groups to the end
    assert bulk.exit_code == 0, bulk.output
    summary = json.loads(bulk.output.strip().splitlines()[-1])
    assert summary["statuses"] == {"delivered": 2}
    for job_id, account in zip(summary["job_ids"], ("shop", "slow"), strict=True):
        sent(job_id, account, f"bulk {account} {marker}")

    # an account in no group: refused before queueing, on every path
    with pytest.raises(UnknownAccount, match="'nobody' is in no group of IGSEND_GROUPS"):
        send_text("r", "never", account="nobody")
    refused = api.post("/v1/messages", headers=AUTH, json={"kind": "text", "recipient": "r", "text": "never",
                                                            "account": "nobody"})
    assert refused.status_code == 422 and "account" in refused.json["errors"]["json"]
    cli_refused = _cli("send", "text", "r", "never", "--account", "nobody")
    assert cli_refused.exit_code == 2 and "in no group" in cli_refused.output

    for job_id, (account, _) in jobs.items():
        group = "beta" if account == "slow" else "alpha"
        assert job_id.startswith(f"{group}."), job_id  # the id names the group
        assert get_job(job_id).result(timeout=30)["recipient_id"]
        assert _group_holding(grouped, job_id) == [group]  # queued, sent and recorded in its group only
        status = _cli("status", job_id)
        assert status.exit_code == 0 and json.loads(status.output)["status"] == "delivered"
        got = api.get(f"/v1/messages/{job_id}", headers=AUTH)
        assert got.status_code == 200 and got.json["status"] == "delivered"
    assert api.get("/v1/messages/alpha.no-such-job", headers=AUTH).status_code == 404
    delivered = _texts(grouped.sandbox, marker)
    assert delivered == Counter((ACCOUNT_IDS[account], text) for account, text in jobs.values())  # each once
    assert not any("never" in text for _, text in delivered)
    for group in LAYOUT:  # nothing of the refused account was recorded or queued anywhere
        assert not list(grouped.client(group).scan_iter("igsend:idem:nobody:*"))
        assert grouped.client(group).llen("igsend") == 0


def test_accounts_list_groups_list_and_healthz_show_every_group(grouped: Grouped) -> None:
    listed = _cli("accounts", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output[listed.output.index("["):])
    assert {(row["group"], row["account"]) for row in rows if row["workers"]} == {
        ("alpha", "default"), ("alpha", "shop"), ("beta", "slow")}
    table = _cli("accounts", "list")
    assert table.output.splitlines()[0].split()[:2] == ["GROUP", "ACCOUNT"]
    groups = json.loads(_cli("groups", "list").output)
    assert [(g["group"], g["accounts"], g["served"], g["workers"]) for g in groups] == [
        ("alpha", ["default", "shop"], ["default", "shop"], 1), ("beta", ["slow"], ["slow"], 1)]
    health = _api().get("/healthz")
    assert health.status_code == 200 and health.json["ok"] is True and health.json["workers"] == 2
    assert [(g["group"], g["redis"], g["workers"], g["accounts"]) for g in health.json["groups"]] == [
        ("alpha", True, 1, ["default", "shop"]), ("beta", True, 1, ["slow"])]


def test_a_keys_request_rate_is_counted_in_a_group(grouped: Grouped) -> None:
    """With groups the API's own IGSEND_REDIS_URL names no Redis (a dead port here): a key's @N still holds."""
    from producers.api import create_app

    client = create_app(api_keys=["limited-key:read@2"]).test_client()
    headers = {"Authorization": "Bearer limited-key"}
    answers = [client.get(f"/v1/messages/alpha.{uuid.uuid4()}", headers=headers).status_code for _ in range(4)]
    assert answers[:2] == [404, 404] and 429 in answers[2:]


def _csrf(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:300]
    return match.group(1).decode()


def test_the_console_covers_every_group(grouped: Grouped, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console (/ui) over two groups: every group's accounts, dead letters and scheduled messages; a job, a dead
    letter and a cancel each routed to the group its id names; a group whose Redis is down shown as down."""
    from igsend.core import routing
    from producers import get_job, send_text
    from tests.conftest import wait_until

    monkeypatch.setenv("IGSEND_UI_SECRET", "groups-console-secret-0123456789")
    ui = _api()
    login = ui.post("/ui/login", data={"api_key": KEY, "csrf_token": _csrf(ui.get("/ui/login").data)})
    assert login.status_code == 302 and ui.get("/ui").status_code == 200

    recipient = f"nobody-{uuid.uuid4().hex[:6]}"
    requests.post(f"{grouped.sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": [
        {"code": 100, "subcode": 2018001}]}, timeout=5).raise_for_status()
    dead = send_text(recipient, "dead in beta", account="slow")
    in_alpha = send_text("r-console", "hello alpha", account="default")
    later = send_text("r-later", "tomorrow", account="slow", send_at=time.time() + 3600)
    assert dead.id.startswith("beta.") and in_alpha.id.startswith("alpha.") and later.id.startswith("beta.")
    in_alpha.result(timeout=30)
    wait_until(lambda: dead.status() == "dead", timeout=30)

    overview = ui.get("/ui").get_data(as_text=True)  # every group's accounts, with their group
    rows = set(re.findall(r"<td>(alpha|beta)</td>\s*<td>(\w+)</td>", overview))
    assert {("alpha", "default"), ("alpha", "shop"), ("beta", "slow")} <= rows
    assert overview.count("Workers alive") == 2 and overview.count("Redis memory") == 2  # each group's own

    # the dead letter of beta: listed (every group, and beta's own), opened, replayed, delivered
    assert dead.id in ui.get("/ui/dead-letters").get_data(as_text=True)
    assert dead.id in ui.get("/ui/dead-letters?group=beta").get_data(as_text=True)
    assert dead.id not in ui.get("/ui/dead-letters?group=alpha").get_data(as_text=True)
    detail = ui.get(f"/ui/dead-letters/{dead.id}")
    assert detail.status_code == 200 and "No matching user found" in detail.get_data(as_text=True)
    replayed = ui.post(f"/ui/dead-letters/{dead.id}/replay", data={"csrf_token": _csrf(detail.data)})
    assert replayed.status_code == 302 and replayed.headers["Location"] == f"/ui/jobs/{dead.id}"
    assert get_job(dead.id).result(timeout=30)["recipient_id"]
    assert "delivered" in ui.get(f"/ui/jobs/{dead.id}").get_data(as_text=True)
    assert _group_holding(grouped, dead.id) == ["beta"] and not grouped.client("beta").hexists("igsend:dlq", dead.id)

    # a job of alpha opened by id through the search box
    found = ui.get("/ui/jobs", query_string={"id": in_alpha.id})
    assert found.status_code == 302
    page = ui.get(found.headers["Location"]).get_data(as_text=True)
    assert "delivered" in page and "<dd>alpha</dd>" in page
    assert ui.get("/ui/jobs/beta.no-such-job").status_code == 404

    # the scheduled message of beta, listed with every group's and cancelled
    listing = ui.get("/ui/scheduled")
    assert later.id in listing.get_data(as_text=True)
    cancelled = ui.post(f"/ui/jobs/{later.id}/cancel", data={"csrf_token": _csrf(listing.data)})
    assert cancelled.status_code == 302 and later.status() == "cancelled"

    # a third group whose Redis is down: shown as down, the others still shown, and its jobs answer 503
    write_groups(grouped.path, {**grouped.urls, "gamma": NOWHERE}, {**LAYOUT, "gamma": ["ghost"]})
    routing.forget()
    try:
        overview = ui.get("/ui")
        text = overview.get_data(as_text=True)
        assert overview.status_code == 200 and "<td>ghost</td>" in text and "<td>slow</td>" in text
        assert "Group <strong>gamma</strong>: <span class=\"state down\">down</span>" in text
        listed = ui.get("/ui/dead-letters")
        assert listed.status_code == 200 and "group gamma: cannot reach Redis" in listed.get_data(as_text=True)
        assert ui.get("/ui/scheduled").status_code == 200 and ui.get("/ui/accounts").status_code == 200
        assert ui.get("/ui/jobs/gamma.some-job").status_code == 503
    finally:
        write_groups(grouped.path, grouped.urls, LAYOUT)
        routing.forget()


def test_moving_an_account_between_groups(grouped: Grouped) -> None:
    """docs/groups.md, "Moving an account": switch (groups file, new group's workers, keys), drain, verify."""
    from igsend.core.routing import RECHECK_SECONDS
    from producers import get_job, send_text

    marker = uuid.uuid4().hex[:8]
    # before the switch: shop's messages go to alpha; some wait there (scheduled) past the switch
    before = [send_text("r-move", f"before {i} {marker}", account="shop", send_at=time.time() + 10).id
              for i in range(3)]
    keyed = send_text("r-move", f"keyed {marker}", account="shop", idempotency_key=f"k-{marker}")
    keyed.result(timeout=30)
    before.append(keyed.id)
    assert all(job_id.startswith("alpha.") for job_id in before)

    # switch: the file moves shop to beta, beta's workers restart to serve it, the keys follow
    write_groups(grouped.path, grouped.urls, MOVED)
    # alpha still holds what it queued (checked before beta's worker starts: the wait must outlast that start)
    assert json.loads(_cli("groups", "backlog", "shop").output)["alpha"] == {"scheduled": 3}
    grouped.start("beta")
    copied = _cli("groups", "copy-keys", "shop", "--from", "alpha", "--to", "beta")
    assert copied.exit_code == 0 and json.loads(copied.output)["copied"] >= 1  # the bulk line's key too
    time.sleep(RECHECK_SECONDS + 0.1)  # producers see the saved file within this, without a restart

    after = [send_text("r-move", f"after {i} {marker}", account="shop").id for i in range(3)]
    assert all(job_id.startswith("beta.") for job_id in after)
    again = send_text("r-move", f"keyed {marker}", account="shop", idempotency_key=f"k-{marker}")
    assert again.id == keyed.id  # a retried send across the move gets its first job back: not sent twice

    # drain: alpha's worker (started with the old file) still serves shop and sends what alpha holds of it
    for job_id in before + after:
        assert get_job(job_id).result(timeout=30)
    # verify: alpha holds nothing more of shop; every message went out once, from the group that queued it
    assert json.loads(_cli("groups", "backlog", "shop").output) == {"alpha": {}, "beta": {}}
    for job_id in before:
        assert _group_holding(grouped, job_id) == ["alpha"]
    for job_id in after:
        assert _group_holding(grouped, job_id) == ["beta"]
    texts = [f"before {i} {marker}" for i in range(3)] + [f"keyed {marker}"] + [f"after {i} {marker}"
                                                                                 for i in range(3)]
    assert _texts(grouped.sandbox, marker) == Counter((SHOP_PAGE_ID, text) for text in texts)
    # last: alpha's workers restart with the new file and stop serving shop
    grouped.start("alpha")
    groups = {g["group"]: g["served"] for g in json.loads(_cli("groups", "list").output)}
    assert groups == {"alpha": ["default"], "beta": ["shop", "slow"]}
    assert requests.get(f"{grouped.sandbox}/_sandbox/messages", timeout=5).ok


# --- webhooks: each event in its account's group ----------------------------------------------------------------

APP_SECRET = "groups-test-app-secret"
STRANGER_ID = "17841400000000099"  # an account no group holds


@pytest.fixture
def webhook_api(grouped: Grouped, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The HTTP API taking Meta's webhooks in-process (one inbox thread per group), stopped after the test."""
    from producers.webhooks import inbox

    monkeypatch.setenv("IGSEND_WEBHOOK_VERIFY_TOKEN", "groups-verify-token")
    monkeypatch.setenv("IGSEND_APP_SECRET", APP_SECRET)
    yield _api()
    for url in grouped.urls.values():
        inbox(url).stop()
    inbox.cache_clear()


def _webhook(api: Any, entries: list[dict[str, Any]]) -> Any:
    body = json.dumps({"object": "instagram", "entry": entries}).encode()
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return api.post("/webhooks/instagram", data=body, headers={"X-Hub-Signature-256": signature,
                                                               "Content-Type": "application/json"})


def _wrote(account_id: str, person: str, ms: int) -> dict[str, Any]:
    """An entry of one message a person wrote to the account ``account_id`` at ``ms``."""
    return {"id": account_id, "time": ms, "messaging": [{"sender": {"id": person}, "recipient": {"id": account_id},
                                                         "timestamp": ms, "message": {"mid": f"m-{person}",
                                                                                      "text": "hello"}}]}


def _inbound(client: redis_lib.Redis, marker: str) -> set[tuple[str, str]]:
    """(account, sender) of the group's inbound events whose sender carries ``marker``."""
    return {(fields["account"], fields["sender"]) for _, fields in client.xrange("igsend:inbound")
            if marker in fields["sender"]}


def test_a_webhook_opens_the_window_in_its_accounts_group(grouped: Grouped, webhook_api: Any) -> None:
    """One delivery naming accounts of both groups and an account of none: each entry is recorded in its account's
    group (where producers and workers check the window), the stranger's kept without an account in the first."""
    from igsend.core.inbound import INBOX_KEY, last_wrote_key
    from producers import OutsideWindow, send_text

    marker = uuid.uuid4().hex[:8]
    inside, outside, other, stranger = (f"{who}-{marker}" for who in ("inside", "outside", "other", "stranger"))
    now_ms = int(time.time() * 1000)
    answer = _webhook(webhook_api, [_wrote(SLOW_ACCOUNT_ID, inside, now_ms),
                                    _wrote(SLOW_ACCOUNT_ID, outside, now_ms - 25 * 3600 * 1000),  # window closed
                                    _wrote(ACCOUNT_ID, other, now_ms), _wrote(STRANGER_ID, stranger, now_ms)])
    assert answer.status_code == 200  # the stranger's entry too: Meta must not retry it forever
    alpha, beta = grouped.client("alpha"), grouped.client("beta")
    wait_until(lambda: beta.exists(last_wrote_key("slow", inside)) and alpha.exists(last_wrote_key("default", other))
               and alpha.xlen(INBOX_KEY) == 0 and beta.xlen(INBOX_KEY) == 0, timeout=15)
    assert _inbound(beta, marker) == {("slow", inside), ("slow", outside)}
    assert _inbound(alpha, marker) == {("default", other), ("", stranger)}
    assert not alpha.keys(f"igsend:lastwrote:slow:*{marker}") and not beta.keys(f"igsend:lastwrote:default:*{marker}")

    with pytest.raises(OutsideWindow) as refused:  # beta's window, checked on beta's Redis before queueing
        send_text(outside, f"never {marker}", account="slow")
    assert "outside the 24-hour window" in refused.value.normalized_messages()["recipient"][0]
    job = send_text(inside, f"reply {marker}", account="slow")
    assert job.id.startswith("beta.") and job.result(timeout=30)["recipient_id"]
    assert _texts(grouped.sandbox, marker) == Counter({(SLOW_ACCOUNT_ID, f"reply {marker}"): 1})


def test_one_group_down_fails_its_own_calls_at_once_and_names_it(grouped: Grouped, webhook_api: Any) -> None:
    """Last in this file: beta's Redis is stopped for good (its worker first, so that it stops cleanly)."""
    from producers import send_text

    marker = uuid.uuid4().hex[:8]
    grouped.workers.pop("beta").stop()
    grouped.servers["beta"].stop()
    refused = webhook_api.post("/v1/messages", headers=AUTH, json={"kind": "text", "recipient": "r", "text": "x",
                                                                   "account": "slow"})
    assert refused.status_code == 503 and "group beta (accounts slow" in refused.json["message"]
    batch = webhook_api.post("/v1/messages:batch", headers=AUTH, json={"messages": [
        {"kind": "text", "recipient": "r", "text": "x", "account": a} for a in ("default", "slow")]})
    assert batch.status_code == 503 and "group beta" in batch.json["message"]  # nothing of the batch queued
    for path in ("/v1/messages/beta.0f0c3e1a", "/v1/dead-letters?account=slow"):
        looked_up = webhook_api.get(path, headers=AUTH)
        assert looked_up.status_code == 503 and "group beta" in looked_up.json["message"], path
    delivery = _webhook(webhook_api, [_wrote(SLOW_ACCOUNT_ID, f"p-{marker}", int(time.time() * 1000))])
    assert delivery.status_code == 503  # Meta retries it until beta is back

    # alpha keeps working: the API, the webhooks, the health probe
    sent = webhook_api.post("/v1/messages", headers=AUTH, json={"kind": "text", "recipient": "r-alive",
                                                                "text": f"alive {marker}", "account": "default"})
    assert sent.status_code == 202, sent.json
    assert send_text("r-alive", f"py {marker}", account="default").result(timeout=30)["recipient_id"]
    assert webhook_api.get(f"/v1/messages/{sent.json['id']}", headers=AUTH).status_code == 200
    assert _webhook(webhook_api, [_wrote(ACCOUNT_ID, f"q-{marker}", int(time.time() * 1000))]).status_code == 200
    health = webhook_api.get("/healthz")
    assert health.status_code == 200 and health.json["ok"] is False
    assert [(g["group"], g["redis"]) for g in health.json["groups"]] == [("alpha", True), ("beta", False)]
    assert "beta" in health.json["error"]
