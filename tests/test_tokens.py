"""Token lifecycle (docs/tokens.md): token files, expiry shown, refreshes, a held account healed by its new token.

The first part checks the pieces in-process (the accounts file's rules, the atomic write, what is shown from the
facts). The rest runs real processes: a sandbox of this module's own (its token rules are changed here) and one
``igsend worker`` with its own accounts file and token files, on a Redis database no other test uses (13), checking
tokens every 2 seconds. Tests after ``test_a_refresh_is_applied...`` share that worker and run in file order.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests

from igsend.core import account_state, presence
from igsend.core.store import account_key, token_key
from igsend.local.processes import Service
from producers.jobs import MessageDead
from sandbox.tokens import digest
from tests.conftest import reset_client_caches, wait_until
from tests.test_cli import igsend
from workers.accounts import AccountError, load_accounts
from workers.logs import redact
from workers.tokens import TokenPolicy, fingerprint, write_token_file

pytestmark = pytest.mark.timeout(180)

DB = 13
PROCESSES = 2  # the stack's worker runs two processes: each must read a token file that changes
DAY = 86400
STUDIO_ID, FRESH_ID, ROTATE_ID = "17841400000000021", "17841400000000022", "17841400000000023"
PAGE_ID, SOON_ID = "104000000000031", "104000000000032"
# Instagram-Login tokens start IG, Page tokens EAA: the sandbox tells the login kind by the prefix
STUDIO_TOKEN = "IGQstudio" + "s" * 40  # refresh = true, old enough: refreshed at the worker's start
FRESH_TOKEN = "IGQfresh" + "f" * 40  # refresh = true, but the sandbox says it is too young: the refresh fails
ROTATE_TOKEN = "IGQrotate" + "r" * 40  # token_file without refresh: expires, then replaced by hand
ROTATE_NEW = "IGQrotnew" + "n" * 40
PAGE_TOKEN = "EAApage" + "p" * 40  # Facebook Login, never expires
SOON_TOKEN = "EAAsoon" + "q" * 40  # Facebook Login, expires in 3 days
CONFIGURED = [STUDIO_TOKEN, FRESH_TOKEN, ROTATE_TOKEN, PAGE_TOKEN, SOON_TOKEN]


# --- the accounts file --------------------------------------------------------------------------------------------

def accounts(tmp_path: Path, body: str, **files: str) -> dict[str, Any]:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "accounts.toml"
    path.write_text(body)
    return load_accounts({"IGSEND_ACCOUNTS_FILE": str(path)})


def refused(tmp_path: Path, body: str, **files: str) -> str:
    with pytest.raises(AccountError) as info:
        accounts(tmp_path, body, **files)
    return str(info.value)


def test_token_file_is_read_relative_to_the_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "a.token").write_text(f"  {STUDIO_TOKEN}\n")
    account = accounts(tmp_path, '[accounts.a]\ntoken_file = "tokens/a.token"\nrefresh = true\n')["a"]
    assert account.token == STUDIO_TOKEN
    assert account.token_file == str(tmp_path / "tokens" / "a.token")
    assert account.refresh is True
    assert STUDIO_TOKEN not in repr(account)


@pytest.mark.parametrize(("body", "files", "expected"), [
    ('[accounts.a]\ntoken = "IGQx12345678"\nrefresh = true\n', {},
     'accounts.a.refresh: refresh = true needs token_file = "PATH"'),
    ('[accounts.a]\nlogin = "facebook"\ntoken_file = "t"\nrefresh = true\n', {"t": PAGE_TOKEN},
     "accounts.a.refresh: refresh = true is for Instagram-Login tokens"),
    ('[accounts.a]\ntoken_file = "t"\ntoken_env = "X"\n', {"t": STUDIO_TOKEN},
     "accounts.a.token_file: set one of token, token_env or token_file (also set: token_env)"),
    ('[accounts.a]\ntoken_file = "missing"\n', {}, "accounts.a.token_file: cannot read"),
    ('[accounts.a]\ntoken_file = "t"\n', {"t": "\n  \n"}, "accounts.a.token_file: "),
    ('[accounts.a]\ntoken_file = "t"\n', {"t": "IGQone two"}, "the token holds a character tokens never hold"),
    ('[accounts.a]\ntoken_file = "t"\nrefresh = "yes"\n', {"t": STUDIO_TOKEN},
     "accounts.a.refresh: must be true or false"),
    ('[accounts.a]\ntoken_file = 3\n', {}, "accounts.a.token_file: must be the path of a file"),
])
def test_token_file_and_refresh_mistakes_name_the_file_account_and_field(
        tmp_path: Path, body: str, files: dict[str, str], expected: str) -> None:
    message = refused(tmp_path, body, **files)
    assert message.startswith(f"{tmp_path / 'accounts.toml'}: "), message
    assert expected in message
    assert "IGQone" not in message and STUDIO_TOKEN not in message


def test_an_empty_token_file_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, '[accounts.a]\ntoken_file = "t"\n', t="\n")
    assert message.endswith(f"accounts.a.token_file: {tmp_path / 't'} is empty")


def test_refresh_needs_a_folder_the_worker_may_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.accounts.os.access", lambda path, mode: False)  # tests may run as root
    message = refused(tmp_path, '[accounts.a]\ntoken_file = "t"\nrefresh = true\n', t=STUDIO_TOKEN)
    assert "accounts.a.refresh: refresh = true writes the new token next to" in message
    assert f"cannot write to {tmp_path}" in message


def test_write_token_file_is_atomic_private_and_yields_to_a_change(tmp_path: Path) -> None:
    path = tmp_path / "a.token"
    path.write_text(STUDIO_TOKEN + "\n")
    path.chmod(0o644)
    assert write_token_file(str(path), "IGQnew" + "n" * 30, expected=STUDIO_TOKEN) is True
    assert path.read_text() == "IGQnew" + "n" * 30 + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.token"]  # no temporary file left behind
    # the operator wrote another token meanwhile: theirs stays
    assert write_token_file(str(path), "IGQlater" + "l" * 30, expected=STUDIO_TOKEN) is False
    assert path.read_text() == "IGQnew" + "n" * 30 + "\n"


@pytest.mark.parametrize(("env", "expected"), [
    ({"IGSEND_TOKEN_CHECK_EVERY": "0"}, "IGSEND_TOKEN_CHECK_EVERY: must be a positive number of seconds"),
    ({"IGSEND_TOKEN_REFRESH_DAYS": "soon"}, "IGSEND_TOKEN_REFRESH_DAYS: must be a positive number of days"),
])
def test_token_settings_are_checked(env: dict[str, str], expected: str) -> None:
    from igsend.core.errors import ConfigurationError

    assert TokenPolicy.from_env({}) == TokenPolicy(check_every=86400, refresh_days=50)
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        TokenPolicy.from_env(env)


def test_debug_token_urls_are_redacted() -> None:
    assert redact("GET /v25.0/debug_token?input_token=plain-secret&x=1") == \
        "GET /v25.0/debug_token?input_token=[redacted]&x=1"


def test_what_is_shown_of_the_token_facts() -> None:
    now = 1_800_000_000.0
    view = account_state.token_view({"expires_at": str(now + 59 * DAY), "source": "refresh", "refresh": "1"}, now)
    assert (view["expires_in"], view["refresh"], view["source"]) == (59 * DAY, True, "refresh")
    assert account_state.describe_token(view).endswith("(59 d left)")
    assert account_state.describe_token(account_state.token_view({"expires_at": "0"}, now)) == "never expires"
    assert account_state.describe_token(account_state.token_view({}, now)) == "unknown"
    failed = account_state.token_view({"problem": "refresh failed: Graph error 100: too young"}, now)
    assert account_state.describe_token(failed) == "unknown; refresh failed"
    gone = account_state.token_view({"expires_at": str(now - 60)}, now)
    assert account_state.describe_token(gone).startswith("expired ") and gone["expires_in"] == -60


# --- the sandbox's token endpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=CONFIGURED, log_path=tmp_path_factory.mktemp("logs") / "sandbox.log")
    yield service.url
    service.stop()


def sandbox_token(url: str, **fields: Any) -> dict[str, Any]:
    answer = requests.post(f"{url}/_sandbox/tokens", json=fields, timeout=5)
    answer.raise_for_status()
    return answer.json()["token"]


def test_sandbox_refreshes_old_enough_instagram_tokens_only(token_sandbox: str) -> None:
    url = token_sandbox
    young = "IGQyoung" + "y" * 40
    sandbox_token(url, token=young, issued_at=time.time())
    refused_young = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": young}, timeout=5)
    assert refused_young.status_code == 400 and refused_young.json()["error"]["code"] == 100
    assert "at least 24 hours old" in refused_young.json()["error"]["message"]
    page = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": PAGE_TOKEN}, timeout=5)
    assert page.status_code == 400 and "Instagram Login" in page.json()["error"]["message"]
    unknown = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": "IGQnobody" + "z" * 30}, timeout=5)
    assert unknown.json()["error"]["code"] == 190
    requests.post(f"{url}/_sandbox/config", json={"refresh_min_age": 0}, timeout=5).raise_for_status()
    try:
        fresh = requests.get(f"{url}/refresh_access_token", params={
            "grant_type": "ig_refresh_token", "access_token": young}, timeout=5).json()
    finally:
        requests.post(f"{url}/_sandbox/config", json={"refresh_min_age": DAY}, timeout=5).raise_for_status()
    assert fresh["token_type"] == "bearer" and fresh["expires_in"] == 60 * DAY
    new = fresh["access_token"]
    assert new.startswith("IG")
    # the new token is accepted from now on, and the old one until its own expiry
    for token in (new, young):
        sent = requests.post(f"{url}/v25.0/me/messages", json={"recipient": {"id": "1"}, "message": {"text": "x"}},
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert sent.status_code == 200, sent.text
    listed = requests.get(f"{url}/_sandbox/tokens", timeout=5).json()
    shown = {entry["digest"]: entry for entry in listed["tokens"]}
    assert shown[digest(new)]["refreshed_from"] == digest(young)
    assert new not in json.dumps(listed) and young not in json.dumps(listed)
    # an expired token answers 190/463 everywhere
    sandbox_token(url, token=young, expires_at=time.time() - 1)
    expired = requests.post(f"{url}/v25.0/me/messages", json={"recipient": {"id": "1"}, "message": {"text": "x"}},
                            headers={"Authorization": f"Bearer {young}"}, timeout=5).json()["error"]
    assert (expired["code"], expired["error_subcode"]) == (190, 463)


def test_sandbox_debug_token(token_sandbox: str) -> None:
    url = token_sandbox
    headers = {"Authorization": f"Bearer {PAGE_TOKEN}"}
    data = requests.get(f"{url}/v25.0/debug_token", params={"input_token": PAGE_TOKEN}, headers=headers,
                        timeout=5).json()["data"]
    assert (data["is_valid"], data["expires_at"], data["type"]) == (True, 0, "PAGE")
    assert data["data_access_expires_at"] > time.time() + 80 * DAY
    ig = requests.get(f"{url}/debug_token", params={"input_token": STUDIO_TOKEN}, headers=headers,
                      timeout=5).json()["data"]
    assert ig["type"] == "USER" and ig["expires_at"] == pytest.approx(ig["issued_at"] + 60 * DAY, abs=2)
    bad = requests.get(f"{url}/v25.0/debug_token", params={"input_token": "EAAnobody" + "z" * 30}, headers=headers,
                       timeout=5)
    assert bad.status_code == 200 and bad.json()["data"]["is_valid"] is False
    assert bad.json()["data"]["error"]["code"] == 190
    caller_unknown = requests.get(f"{url}/v25.0/debug_token", params={"input_token": PAGE_TOKEN},
                                  headers={"Authorization": "Bearer EAAnobody" + "z" * 30}, timeout=5)
    assert caller_unknown.status_code == 400 and caller_unknown.json()["error"]["type"] == "OAuthException"


# --- a worker of its own ------------------------------------------------------------------------------------------

class Stack:
    def __init__(self, url: str, sandbox: str, worker: Service, folder: Path, metrics_port: int):
        self.url, self.sandbox, self.worker, self.folder, self.metrics_port = url, sandbox, worker, folder, metrics_port
        self.r = redis_lib.Redis.from_url(url, decode_responses=True)

    def file(self, name: str) -> Path:
        return self.folder / "tokens" / f"{name}.token"

    def facts(self, name: str) -> dict[str, str]:
        return self.r.hgetall(token_key(name))

    def listed(self) -> dict[str, dict[str, Any]]:
        result = igsend("accounts", "list", "--json", env={"IGSEND_REDIS_URL": self.url})
        assert result.returncode == 0, result.stderr
        return {row["account"]: row for row in json.loads(result.stdout)}

    def table(self) -> dict[str, str]:
        result = igsend("accounts", "list", env={"IGSEND_REDIS_URL": self.url})
        assert result.returncode == 0, result.stderr
        return {line.split()[0]: line for line in result.stdout.splitlines()[1:]}

    def metrics(self, name: str, **labels: str) -> list[float]:
        """A sample of each worker process's own metrics endpoint (process i on the base port + i); 0 if absent."""
        from prometheus_client.parser import text_string_to_metric_families

        values = []
        for port in range(self.metrics_port, self.metrics_port + PROCESSES):
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            values.append(next((float(sample.value) for family in text_string_to_metric_families(text)
                                for sample in family.samples if sample.name == name and sample.labels == labels), 0.0))
        return values

    def log(self) -> str:
        assert self.worker.log_path is not None
        return self.worker.log_path.read_text(errors="replace")

    def received(self, account_id: str) -> list[dict[str, Any]]:
        return requests.get(f"{self.sandbox}/_sandbox/messages", params={"account": account_id},
                            timeout=5).json()["messages"]


def write_atomically(path: Path, token: str) -> None:
    """As docs/tokens.md asks of operators: another file in the same folder, then a rename."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(token + "\n")
    temporary.chmod(0o600)
    os.replace(temporary, path)


@pytest.fixture(scope="module")
def stack(redis_server: str, token_sandbox: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_worker

    url = redis_server.rsplit("/", 1)[0] + f"/{DB}"
    redis_lib.Redis.from_url(url).flushdb()
    folder = tmp_path_factory.mktemp("tokens-stack")
    (folder / "tokens").mkdir()
    for name, token in (("studio", STUDIO_TOKEN), ("fresh", FRESH_TOKEN), ("rotate", ROTATE_TOKEN),
                        ("soon", SOON_TOKEN)):
        (folder / "tokens" / f"{name}.token").write_text(token + "\n")
        (folder / "tokens" / f"{name}.token").chmod(0o600)
    two_days_ago = time.time() - 2 * DAY  # token files older than 24 h: the worker may refresh them at once
    for name in ("studio", "fresh"):
        os.utime(folder / "tokens" / f"{name}.token", (two_days_ago, two_days_ago))
    (folder / "accounts.toml").write_text(f"""
[accounts.studio]
id = "{STUDIO_ID}"
token_file = "tokens/studio.token"
refresh = true

[accounts.fresh]
id = "{FRESH_ID}"
token_file = "tokens/fresh.token"
refresh = true

[accounts.rotate]
id = "{ROTATE_ID}"
token_file = "tokens/rotate.token"

[accounts.page]
id = "{PAGE_ID}"
login = "facebook"
token = "{PAGE_TOKEN}"

[accounts.soon]
id = "{SOON_ID}"
login = "facebook"
token_file = "tokens/soon.token"
""")
    now = time.time()
    sandbox_token(token_sandbox, token=FRESH_TOKEN, issued_at=now)  # Meta would refuse to refresh it yet
    sandbox_token(token_sandbox, token=PAGE_TOKEN, data_access_expires_at=now + 80 * DAY)
    sandbox_token(token_sandbox, token=SOON_TOKEN, expires_at=now + 3 * DAY, data_access_expires_at=now + 80 * DAY)
    metrics_port = free_port()
    while not all(_port_free(metrics_port + i) for i in range(PROCESSES)):
        metrics_port = free_port()
    env = {"IGSEND_REDIS_URL": url, "IGSEND_GRAPH_URL": token_sandbox, "IGSEND_ACCOUNTS_FILE": str(folder /
           "accounts.toml"), "IGSEND_ACCESS_TOKEN": "", "IGSEND_TOKEN_CHECK_EVERY": "2",
           "IGSEND_METRICS_PORT": str(metrics_port), "IGSEND_RETRY_BASE": "0.2", "IGSEND_RETRY_CAP": "1",
           "IGSEND_MAX_ATTEMPTS": "4", "IGSEND_SEND_DEADLINE": "5"}
    worker = start_worker(env=env, log_path=folder / "worker.log", concurrency=4, processes=PROCESSES)
    previous = os.environ.get("IGSEND_REDIS_URL")
    os.environ["IGSEND_REDIS_URL"] = url  # this process's producers, API and exporter
    reset_client_caches()
    presence.forget()
    yield Stack(url, token_sandbox, worker, folder, metrics_port)
    worker.stop()
    if previous is not None:
        os.environ["IGSEND_REDIS_URL"] = previous
    reset_client_caches()
    presence.forget()
    redis_lib.Redis.from_url(url).flushdb()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def send(account: str, text: str = "hi") -> Any:
    import producers

    return producers.send_text("17841499999999999", text, account=account)


@pytest.mark.scenario
def test_a_refresh_is_applied_written_privately_and_sent_with(stack: Stack) -> None:
    path = stack.file("studio")
    new = wait_until(lambda: (path.read_text().strip() != STUDIO_TOKEN) and path.read_text().strip(), timeout=30)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    tokens = requests.get(f"{stack.sandbox}/_sandbox/tokens", timeout=5).json()
    assert {t["digest"]: t for t in tokens["tokens"]}[digest(new)]["refreshed_from"] == digest(STUDIO_TOKEN)
    # the expiry comes from the refresh's expires_in (60 days), published without the token
    facts = wait_until(lambda: stack.facts("studio").get("source") == "refresh" and stack.facts("studio"))
    assert float(facts["expires_at"]) == pytest.approx(time.time() + 60 * DAY, abs=30)
    assert facts["fingerprint"] == fingerprint(new) and "problem" not in facts
    row = stack.listed()["studio"]["token"]
    assert (row["source"], row["refresh"], row["problem"]) == ("refresh", True, None)
    assert row["expires_in"] == pytest.approx(60 * DAY, abs=30)
    assert "(60 d left)" in stack.table()["studio"] or "(59 d left)" in stack.table()["studio"]
    # one process refreshed (the lease); every process reads the file within two seconds of a change
    assert sum(stack.metrics("igsend_token_refreshes_total", account="studio", outcome="ok")) == 1
    time.sleep(3)
    sandbox_token(stack.sandbox, token=STUDIO_TOKEN, valid=False)  # the old token would now get 190
    assert send("studio").result(timeout=30)["recipient_id"]
    assert [m["token_digest"] for m in stack.received(STUDIO_ID)] == [digest(new)]
    for _ in range(5):  # whichever process takes them
        assert send("studio").result(timeout=30)["recipient_id"]
    assert {m["token_digest"] for m in stack.received(STUDIO_ID)} == {digest(new)}
    assert stack.r.hget(account_key("studio"), "health") is None


def test_a_failed_refresh_warns_and_keeps_the_old_token(stack: Stack) -> None:
    facts = wait_until(lambda: (stack.facts("fresh").get("problem") or "").startswith("refresh failed")
                       and stack.facts("fresh"), timeout=30)
    assert "Graph error 100" in facts["problem"] and "24 hours" in facts["problem"]
    assert FRESH_TOKEN not in facts["problem"]
    assert stack.file("fresh").read_text() == FRESH_TOKEN + "\n"
    row = stack.listed()["fresh"]["token"]
    assert row["problem"] == facts["problem"] and row["expires_at"] is None
    assert re.search(r"  unknown; refresh failed +healthy$", stack.table()["fresh"])
    assert sum(stack.metrics("igsend_token_refreshes_total", account="fresh", outcome="failed")) >= 1
    assert "account fresh: refresh failed: Graph error 100" in stack.log()
    assert send("fresh").result(timeout=30)["recipient_id"]
    assert [m["token_digest"] for m in stack.received(FRESH_ID)] == [digest(FRESH_TOKEN)]
    from producers.api import create_app

    health = create_app(require_keys=False).test_client().get("/healthz").get_json()
    assert health["ok"] is True
    assert any(w.startswith("account fresh: refresh failed: Graph error 100") for w in health["token_warnings"])


def test_a_190_holds_the_account_and_a_new_token_file_releases_it(stack: Stack) -> None:
    sandbox_token(stack.sandbox, token=ROTATE_TOKEN, expires_at=time.time() - 60)  # expired at Meta
    first = send("rotate", "one")
    with pytest.raises(MessageDead) as dead:
        first.result(timeout=30)
    assert "190" in str(dead.value)
    assert stack.r.hget(account_key("rotate"), "health") == "broken"
    second = send("rotate", "two")
    wait_until(lambda: stack.r.zcard("igsend:held:rotate") == 1, timeout=30)
    assert second.status().value == "queued"
    time.sleep(0.01)  # the new file is written after the account broke
    sandbox_token(stack.sandbox, token=ROTATE_NEW)
    write_atomically(stack.file("rotate"), ROTATE_NEW)
    assert second.result(timeout=30)["recipient_id"]
    # every worker process read the new token, not only the one that sent
    wait_until(lambda: stack.metrics("igsend_token_reloads_total", account="rotate") == [1.0] * PROCESSES)
    assert account_state.state("rotate", client=stack.r)["health"] == "healthy"
    assert [m["token_digest"] for m in stack.received(ROTATE_ID)] == [digest(ROTATE_NEW)]
    assert "account rotate: it was held for its token; its new token released it and 1 held message(s)" in stack.log()
    wait_until(lambda: stack.facts("rotate").get("fingerprint") == fingerprint(ROTATE_NEW))
    # a file that holds no token is reported and the token in use is kept
    stack.file("rotate").write_text("\n")
    wait_until(lambda: f"account rotate: token_file: {stack.file('rotate')} is empty; it keeps sending with the "
                       "token it has" in stack.log(), timeout=15)
    assert send("rotate", "three").result(timeout=30)["recipient_id"]
    assert [m["token_digest"] for m in stack.received(ROTATE_ID)] == [digest(ROTATE_NEW)] * 2
    write_atomically(stack.file("rotate"), ROTATE_NEW)


def test_facebook_login_expiry_comes_from_debug_token(stack: Stack) -> None:
    wait_until(lambda: stack.facts("page").get("source") == "debug_token"
               and stack.facts("soon").get("source") == "debug_token", timeout=30)
    rows = stack.listed()
    page, soon = rows["page"]["token"], rows["soon"]["token"]
    assert (page["expires_at"], page["expires_in"], page["valid"]) == (0, None, True)
    assert page["data_access_expires_at"] == pytest.approx(time.time() + 80 * DAY, abs=60)
    assert soon["expires_in"] == pytest.approx(3 * DAY, abs=60)
    table = stack.table()
    assert "never expires" in table["page"] and "(3 d left)" in table["soon"]
    from producers.api import create_app

    warnings = create_app(require_keys=False).test_client().get("/healthz").get_json()["token_warnings"]
    assert any(w.startswith("account soon: its token expires in 3 d") for w in warnings), warnings
    assert not any(w.startswith("account page:") for w in warnings)
    from workers.metrics import RedisStateCollector

    samples = {(s.name, s.labels.get("account")): s.value for family in RedisStateCollector().collect()
               for s in family.samples}
    assert samples[("igsend_token_expiry_seconds", "soon")] == pytest.approx(3 * DAY, abs=60)
    assert ("igsend_token_expiry_seconds", "page") not in samples  # never expires
    assert samples[("igsend_token_expiry_seconds", "studio")] == pytest.approx(60 * DAY, abs=60)
    assert samples[("igsend_token_problem", "fresh")] == 1 and samples[("igsend_token_problem", "page")] == 0


def test_nothing_of_a_token_reaches_redis_or_the_log(stack: Stack) -> None:
    studio_now = stack.file("studio").read_text().strip()
    tokens = [*CONFIGURED, ROTATE_NEW, studio_now]
    dump = []
    for key in stack.r.scan_iter("*"):
        kind = stack.r.type(key)
        if kind == "string":
            dump.append(stack.r.get(key) or "")
        elif kind == "hash":
            dump.append(json.dumps(stack.r.hgetall(key)))
        elif kind == "list":
            dump.append(json.dumps(stack.r.lrange(key, 0, -1)))
        elif kind == "set":
            dump.append(json.dumps(sorted(stack.r.smembers(key))))
        elif kind == "zset":
            dump.append(json.dumps(stack.r.zrange(key, 0, -1)))
        elif kind == "stream":
            dump.append(json.dumps(stack.r.xrange(key)))
        dump.append(key)
    text = "\n".join(dump)
    assert any(key.startswith("igsend:token:") for key in stack.r.scan_iter("igsend:token:*"))
    log = stack.log()
    for token in tokens:
        for piece in (token, token[3:23]):  # the token, or a run of it long enough to mean something
            assert piece not in text
            assert piece not in log


def test_a_worker_refuses_refresh_for_a_facebook_login_account(tmp_path: Path, redis_server: str) -> None:
    import subprocess
    import sys

    (tmp_path / "t").write_text(PAGE_TOKEN)
    (tmp_path / "accounts.toml").write_text('[accounts.shop]\nlogin = "facebook"\ntoken_file = "t"\nrefresh = true\n')
    env = {**os.environ, "IGSEND_ACCOUNTS_FILE": str(tmp_path / "accounts.toml"), "IGSEND_ACCESS_TOKEN": "",
           "IGSEND_REDIS_URL": redis_server.rsplit("/", 1)[0] + f"/{DB}"}
    started = subprocess.run([sys.executable, "-m", "igsend.cli", "worker"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 78
    assert started.stderr.strip() == (f"igsend worker: {tmp_path / 'accounts.toml'}: accounts.shop.refresh: refresh = "
                                       "true is for Instagram-Login tokens (login = \"instagram\"); this account uses "
                                       "login = 'facebook', whose Page tokens do not expire")
