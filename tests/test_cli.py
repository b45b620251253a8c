"""The ``igsend`` command line as a user runs it: send, status, send-bulk, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import received
from tests.listeners import CountingListener

IGSEND = [sys.executable, "-m", "igsend.cli"]


def igsend(*args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.usefixtures("worker", "clean")
def test_send_wait_and_status(sandbox: str) -> None:
    sent = igsend("send", "text", "cli-user", "Hi from the shell", "--wait")
    assert sent.returncode == 0, sent.stderr
    outcome = json.loads(sent.stdout)
    assert outcome["status"] == "delivered" and outcome["result"]["recipient_id"] == "cli-user"
    status = igsend("status", outcome["id"])
    assert status.returncode == 0
    assert json.loads(status.stdout)["result"] == outcome["result"]
    queued = igsend("send", "react", "cli-user", outcome["result"]["message_id"], "❤️")
    assert queued.returncode == 0 and len(queued.stdout.strip()) == 36  # just the job id
    assert received(sandbox)[0]["body"]["message"]["text"] == "Hi from the shell"


@pytest.mark.usefixtures("worker", "clean")
def test_send_refuses_bad_input_with_the_rule(r) -> None:
    bad = igsend("send", "image", "cli-user", "https://cdn.example.com/a.bmp")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: url: image must be one of png, jpeg, jpg, gif (got .bmp)"
    assert not list(r.scan_iter("igsend:job:*"))


@pytest.mark.usefixtures("worker", "clean")
def test_dead_message_exits_1_with_the_reason() -> None:
    dead = igsend("send", "text", "ERR_551_1545041", "hello?", "--wait")
    assert dead.returncode == 1
    outcome = json.loads(dead.stdout)
    assert outcome["status"] == "dead" and outcome["error"]["code"] == 551


def test_status_of_an_unknown_job(redis_url: str) -> None:
    missing = igsend("status", "no-such-job")
    assert (missing.returncode, missing.stdout) == (1, "")  # one error line, not a JSON fragment and an error
    assert len(missing.stderr.splitlines()) == 1 and missing.stderr.startswith("error: ")
    assert "no-such-job" in missing.stderr


def test_unreachable_redis_is_one_line_naming_it_and_igsend_up(tmp_path) -> None:
    from igsend.local.embedded_redis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"kind": "text", "recipient": "r", "text": "hi"}) + "\n")
    for args in (["send", "text", "r", "hi"], ["send-bulk", str(batch)]):
        run = igsend(*args, env={"IGSEND_REDIS_URL": url})
        assert (run.returncode, run.stdout) == (1, ""), args
        [line] = run.stderr.splitlines()
        assert line.startswith(f"error: cannot reach Redis at {url}: ") and "`igsend up`" in line, line


def test_a_redis_that_drops_every_connection_is_given_up_after_one_retry(tmp_path) -> None:
    """Fails fast, counted rather than timed: the CLI's brief policy retries a dropped connection once, and
    redis-py nests the connect retry inside the command retry, so at most 2 x 2 connections (the patient policy
    of long-running processes would make 9 x 9)."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"kind": "text", "recipient": "r", "text": "hi"}) + "\n")
    for args in (["send", "text", "r", "hi"], ["send-bulk", str(batch)], ["status", "some-job"]):
        with CountingListener(close_at_once=True) as peer:
            run = igsend(*args, env={"IGSEND_REDIS_URL": peer.url})
        assert (run.returncode, run.stdout) == (1, ""), args
        assert 1 <= peer.connections <= 4, (args, peer.connections)
        [line] = run.stderr.splitlines()
        assert line.startswith(f"error: cannot reach Redis at {peer.url}: "), line


@pytest.mark.usefixtures("worker", "clean")
def test_dlq_list_has_a_header_and_a_count() -> None:
    assert igsend("dlq", "list").stdout == "no dead letters\n"
    dead = json.loads(igsend("send", "text", "ERR_551_1545041", "hello?", "--wait").stdout)
    listed = igsend("dlq", "list").stdout.splitlines()
    assert listed[0].split() == ["JOB", "ID", "ACCOUNT", "KIND", "RECIPIENT", "CODE", "REASON"]
    assert listed[1].split()[:5] == [dead["id"], "default", "text", "ERR_551_1545041", "551/1545041"]
    assert listed[2].startswith("1 dead letter ") and len(listed) == 3


def test_help_shows_a_newcomer_where_to_start() -> None:
    top = igsend("--help").stdout.rstrip().splitlines()
    assert [line.split()[:2] for line in top[-3:]] == [["igsend", "demo"], ["igsend", "up"], ["igsend", "send"]]
    assert top[-4].strip() == "First steps:"
    send_help = igsend("send", "--help").stdout
    usages = {"text": "RECIPIENT TEXT", "link": "RECIPIENT URL", "image": "RECIPIENT SOURCE",
              "gif": "RECIPIENT SOURCE", "video": "RECIPIENT SOURCE", "audio": "RECIPIENT SOURCE",
              "file": "RECIPIENT SOURCE", "images": "RECIPIENT SOURCES...", "post": "RECIPIENT POST_ID",
              "sticker": "RECIPIENT", "react": "RECIPIENT MESSAGE_ID [REACTION]", "unreact": "RECIPIENT MESSAGE_ID",
              "quick_replies": "RECIPIENT TEXT OPTIONS...", "button_template": "RECIPIENT TEXT BUTTONS...",
              "generic_template": "RECIPIENT ELEMENTS", "product_template": "RECIPIENT PRODUCT_IDS...",
              "typing_on": "RECIPIENT", "typing_off": "RECIPIENT", "mark_seen": "RECIPIENT",
              "private_reply": "COMMENT_ID TEXT"}
    for kind, usage in usages.items():
        assert f"  {kind} {usage}" in send_help, kind
    for option in ("--account NAME", "--wait", "--timeout SECONDS", "--idempotency-key KEY"):
        assert f"  {option}" in send_help, option


@pytest.mark.usefixtures("worker", "clean")
def test_send_bulk_reports_bad_lines_and_sends_the_rest(tmp_path, sandbox: str) -> None:
    lines = [json.dumps({"kind": "text", "recipient": f"bulk{i}", "text": f"bulk {i}"}) for i in range(5)]
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"kind": "text", "recipient": "bulk-bad"}))
    path = tmp_path / "messages.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run = igsend("send-bulk", str(path), "--json")
    assert run.returncode == 1  # some lines were invalid
    summary = json.loads(run.stdout)
    assert summary["queued"] == 5 and summary["invalid"] == 2 and summary["statuses"] == {"delivered": 5}
    assert "line 3: not valid JSON" in run.stderr
    assert "line 5: text: is required" in run.stderr
    assert len(received(sandbox)) == 5


def test_demo_uses_the_redis_named_in_dot_env(tmp_path) -> None:
    """`igsend demo` with IGSEND_REDIS_URL in `.env` and nothing answering there: it starts Redis on that port,
    says so first, sends every kind, exits 0 and stops it. (Without a URL it uses a private Redis:
    tests/test_readme.py.)"""
    from igsend.local.embedded_redis import free_port

    port = free_port()
    (tmp_path / ".env").write_text(f"IGSEND_REDIS_URL=redis://127.0.0.1:{port}/0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("IGSEND_REDIS_URL", "IGSEND_DATA_DIR")}
    run = igsend_clean("demo", env={**env, "IGSEND_ACCESS_TOKEN": "", "IGSEND_ACCOUNTS_FILE": ""}, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.splitlines()[0].split() == ["redis", f"redis://127.0.0.1:{port}/0", "(from",
                                                  "IGSEND_REDIS_URL;", "started,", "AOF", "in",
                                                  f"{tmp_path / '.igsend' / 'demo-redis'})"]
    assert "22/22 delivered" in run.stdout
    for kind in ("text", "link", "image", "gif", "video", "audio", "post", "sticker", "react", "unreact"):
        assert f"│ {kind} " in run.stdout
    assert (tmp_path / ".igsend" / "demo-redis" / "appendonlydir").is_dir()  # AOF on, where the user can see it
    from igsend.local.embedded_redis import redis_answers

    assert not redis_answers(f"redis://127.0.0.1:{port}/0")  # and the Redis it started is stopped again


def igsend_clean(*args: str, env: dict[str, str], cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    """``igsend`` with exactly ``env`` (nothing of this process's environment added)."""
    return subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def test_status_wait_prints_the_end_it_waited_for(private_db) -> None:
    """``igsend status ID --wait N`` on a job held in a queue no worker serves: the command is waiting (blocked in
    its one XREAD on this database) and the job not final just before it is cancelled; it prints the cancel."""
    import producers

    job = producers.send_text("cli-wait", "held")
    waiter = subprocess.Popen([*IGSEND, "status", job.id, "--wait", "30"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        from tests.conftest import wait_until

        wait_until(lambda: any(c.get("cmd") == "xread" and "b" in c.get("flags", "") and c.get("db") == "1"
                               for c in private_db.client_list()), timeout=120)
        assert job.status() is producers.JobStatus.QUEUED
        job.cancel()
        out, err = waiter.communicate(timeout=120)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert json.loads(out)["status"] == "cancelled"


def test_status_wait_refuses_out_of_range_naming_the_rule(redis_url: str) -> None:
    for value in ("0", "31", "x"):
        run = igsend("status", "some-job", "--wait", value)
        assert run.returncode == 2 and "--wait" in run.stderr, run.stderr
    assert "0<x<=30" in igsend("status", "some-job", "--wait", "31").stderr


# --- igsend callbacks --------------------------------------------------------------------------------------------

def _callbacks_file(tmp_path, url: str, **options: str) -> dict[str, str]:
    """A callbacks file with the endpoint ``crm`` at ``url``; the environment a command needs to read it."""
    from tests.test_callbacks import SECRET

    extra = "".join(f"{name} = {value}\n" for name, value in options.items())
    path = tmp_path / "callbacks.toml"
    path.write_text(f'[endpoints.crm]\nurl = "{url}"\nsecret_env = "CRM_WEBHOOK_SECRET"\nallow_http = true\n{extra}'
                    f'[endpoints.erp]\nurl = "https://erp.example.com/hook"\nsecret = "{SECRET}"\n'
                    'events = ["message.dead"]\naccounts = ["shop"]\n')
    return {"IGSEND_CALLBACKS_FILE": str(path), "CRM_WEBHOOK_SECRET": SECRET}


def test_callbacks_commands_without_a_file_say_how_to_configure_one(redis_url: str) -> None:
    env = {**os.environ}
    env.pop("IGSEND_CALLBACKS_FILE", None)
    for args in (["list"], ["test", "crm"], ["replay"]):
        run = subprocess.run([*IGSEND, "callbacks", *args], capture_output=True, text=True, timeout=60, env=env)
        assert (run.returncode, run.stdout) == (2, ""), args
        [line] = run.stderr.splitlines()
        assert line.startswith("error: no callback endpoints: set IGSEND_CALLBACKS_FILE to a TOML file"), line


def test_callbacks_test_sends_one_signed_event_and_says_what_the_endpoint_answered(redis_url: str, tmp_path) -> None:
    from tests.test_callbacks import Receiver

    receiver = Receiver()
    try:
        env = _callbacks_file(tmp_path, receiver.url, allow_private="true")
        ok = igsend("callbacks", "test", "crm", env=env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("crm: HTTP 204 (webhook-id msg_test_")
        [event] = receiver.received  # verified with the endpoint's secret by the receiver (standardwebhooks)
        assert (event["type"], event["data"]) == ("test", {"endpoint": "crm"}) and receiver.refused == []
        assert event["id"] in ok.stdout
        receiver.script[:] = [500]
        failed = igsend("callbacks", "test", "crm", env=env)
        assert (failed.returncode, failed.stdout) == (1, "")
        assert failed.stderr.splitlines()[-1] == "error: crm: HTTP 500: "
        # the same endpoint without allow_private, by a name that resolves to loopback: refused, nothing sent
        local = _callbacks_file(tmp_path, receiver.url.replace("127.0.0.1", "localhost"))
        refused = igsend("callbacks", "test", "crm", env=local)
        assert (refused.returncode, refused.stdout) == (1, "")
        line = refused.stderr.splitlines()[-1]
        assert line.startswith("error: crm: refused: localhost is 127.0.0.1: ") and "allow_private" in line, line
        assert len(receiver.started) == 2
        unknown = igsend("callbacks", "test", "nope", env=env)
        assert unknown.returncode == 1
        assert unknown.stderr.splitlines()[-1] == (f"error: no endpoint 'nope' in IGSEND_CALLBACKS_FILE "
                                                   f"({tmp_path}/callbacks.toml; endpoints: crm, erp)")
    finally:
        receiver.server.shutdown()


def test_callbacks_list_shows_each_endpoint_and_replay_queues_the_failed_events(private_db, tmp_path) -> None:
    from igsend.core import callbacks
    from tests.test_callbacks import SECRET

    for index in range(2):  # what a sender leaves after the last try
        private_db.rpush(callbacks.key("crm", "failed"), json.dumps(
            {"webhook_id": f"msg_o1-{index}", "type": "message.dead", "job": f"job-{index}", "account": "default",
             "at": 1.0e9, "tries": 10, "error": "HTTP 500: down", "first_try_at": 1.0e9}))
    private_db.hset(callbacks.key("crm", "stats"), mapping={
        "sent": 7, "failed": 2, "retries": 18, "last_error": "HTTP 500: down", "last_error_at": 1.0e9,
        "state": "disabled", "disabled": "the endpoint answered 410 Gone at 2026-12-05T20:00:00Z"})
    env = _callbacks_file(tmp_path, "https://crm.example.com/igsend")
    listed = igsend("callbacks", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    crm, erp = json.loads(listed.stdout)
    assert (crm["name"], crm["url"], crm["state"], crm["sent"], crm["failed_total"], crm["failed"],
            crm["retries"]) == ("crm", "https://crm.example.com/igsend", "disabled", 7, 2, 2, 18)
    assert (erp["events"], erp["accounts"], erp["state"], erp["sent"]) == (["message.dead"], ["shop"], "enabled", 0)
    assert SECRET not in listed.stdout
    table = igsend("callbacks", "list", env=env)
    header, first, second, *notes = table.stdout.splitlines()
    assert header.split() == ["NAME", "URL", "EVENTS", "ACCOUNTS", "STATE", "SENT", "FAILED", "RETRIES", "QUEUED",
                              "LAG", "LAST", "ERROR"]
    assert first.split()[:8] == ["crm", "https://crm.example.com/igsend", "message.*", "all", "disabled", "7", "2",
                                 "18"] and first.endswith("HTTP 500: down")
    assert second.split()[:5] == ["erp", "https://erp.example.com/hook", "message.dead", "shop", "enabled"]
    assert any("2 failed events kept" in note for note in notes) and SECRET not in table.stdout
    replayed = igsend("callbacks", "replay", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == ["crm: 2 failed events queued again", "erp: 0 failed events queued again",
                                            "2 in all"]
    assert private_db.llen(callbacks.key("crm", "queue")) == 2 and private_db.llen(callbacks.key("crm", "failed")) == 0
    assert callbacks.state(private_db, "crm")["state"] == "enabled"
    one = igsend("callbacks", "replay", "crm", env=env)
    assert one.stdout == "crm: 0 failed events queued again\n"
