"""IGSEND_LOG_FORMAT=json: every line a worker writes is one JSON object — Celery's own lines, Python warnings,
tracebacks (folded into `exc`) and the shutdown notice included — and tokens are still blanked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALL_TOKENS, worker_env

IGSEND = [sys.executable, "-m", "igsend.cli"]
UNREGISTERED = ("from igsend.core.celery_app import get_app; "
                "get_app().send_task('no.such.task', args=[1], queue='igsend')")


@pytest.mark.scenario
def test_every_worker_line_is_json(redis_url: str, sandbox: str, accounts_file: Path, tmp_path: Path) -> None:
    from igsend.local.processes import start_worker

    url = redis_url.rsplit("/", 1)[0] + "/3"  # a db of its own: no other worker takes these messages
    env = worker_env(url, sandbox, accounts_file, IGSEND_LOG_FORMAT="json")
    log = tmp_path / "worker.log"
    worker = start_worker(env=env, log_path=log, concurrency=4)
    try:
        child_env = {**os.environ, **env}
        sent = subprocess.run([*IGSEND, "send", "text", "json-log-user", "hi", "--wait", "--timeout", "30"],
                              capture_output=True, text=True, timeout=60, env=child_env)
        assert sent.returncode == 0, sent.stderr
        subprocess.run([sys.executable, "-c", UNREGISTERED], check=True, timeout=60, env=child_env)
        dead = subprocess.run([*IGSEND, "send", "text", "ERR_551_1545041", "hi", "--wait", "--timeout", "30"],
                              capture_output=True, text=True, timeout=60, env=child_env)
        assert dead.returncode == 1, dead.stderr
    finally:
        worker.stop()
    text = log.read_text()
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"line {number} of the worker log is not JSON: {line!r}") from None
    assert all(isinstance(r, dict) and {"ts", "level", "logger"} <= set(r) for r in records)
    assert any(r.get("event") == "send_attempt" and r.get("status") == "delivered" for r in records)
    assert any("ready." in r.get("message", "") for r in records)  # Celery's own line
    unregistered = [r for r in records if "no.such.task" in r.get("message", "")]
    assert unregistered and "Traceback (most recent call last)" in unregistered[0]["exc"]
    assert any("Warm shutdown" in r.get("message", "") for r in records)
    for token in ALL_TOKENS:
        assert token not in text
