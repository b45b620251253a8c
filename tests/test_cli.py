"""The ``igsend`` command line as a user runs it: send, status, send-bulk, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import received

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
    assert missing.returncode == 1 and json.loads(missing.stdout)["status"] == "not_found"


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


def test_demo_on_embedded_defaults(tmp_path) -> None:
    """`igsend demo` with nothing answering at IGSEND_REDIS_URL: it starts Redis, sends every kind, exits 0."""
    from igsend.local.embedded_redis import free_port

    port = free_port()
    run = igsend("demo", env={"IGSEND_REDIS_URL": f"redis://127.0.0.1:{port}/0", "IGSEND_ACCESS_TOKEN": "",
                              "IGSEND_ACCOUNTS_FILE": ""}, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "10/10 delivered" in run.stdout
    for kind in ("text", "link", "image", "gif", "video", "audio", "post", "sticker", "react", "unreact"):
        assert f"│ {kind} " in run.stdout
    assert (tmp_path / ".igsend" / "redis" / "appendonlydir").is_dir()  # AOF on, where the user can see it
    from igsend.local.embedded_redis import redis_answers

    assert not redis_answers(f"redis://127.0.0.1:{port}/0")  # and the Redis it started is stopped again
