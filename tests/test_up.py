"""`igsend up`: the compose stack as local processes — every service answers, a message goes through the
HTTP API to the sandbox, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from igsend.local.embedded_redis import free_port, redis_answers
from tests.conftest import wait_until


@pytest.mark.scenario
def test_up_runs_the_stack_and_stops_cleanly(tmp_path) -> None:
    ports = {name: free_port() for name in ("redis", "api", "flower", "metrics", "sandbox")}
    env = {**os.environ, "IGSEND_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0", "IGSEND_ACCESS_TOKEN": "",
           "IGSEND_ACCOUNTS_FILE": "", "IGSEND_API_KEYS": "up-key", "IGSEND_FLOWER_AUTH": "ops:up-pass",
           "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "igsend.cli", "up", "--api-port", str(ports["api"]),
                                "--flower-port", str(ports["flower"]), "--metrics-port", str(ports["metrics"]),
                                "--sandbox-port", str(ports["sandbox"])], env=env, cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "igsend is up" in (tmp_path / "up.log").read_text() or process.poll() is not None,
                   timeout=120, interval=0.2)
        output = (tmp_path / "up.log").read_text()
        assert process.poll() is None, output
        for name in ("redis", "sandbox", "worker", "flower", "api", "metrics"):
            assert name in output
        assert output.splitlines()[0].startswith(f"redis    {env['IGSEND_REDIS_URL']}  (from IGSEND_REDIS_URL; started")
        assert "(login ops:up-pass)" in output and "Bearer up-key" in output  # the environment overrides
        api = f"http://127.0.0.1:{ports['api']}"
        auth = {"Authorization": "Bearer up-key"}
        sent = requests.post(f"{api}/v1/messages", json={"kind": "text", "recipient": "up1", "text": "hi"},
                             headers=auth, timeout=10)
        assert sent.status_code == 202, sent.text
        status = wait_until(lambda: (s := requests.get(f"{api}{sent.headers['Location']}", headers=auth,
                                                       timeout=10).json())["status"] == "delivered" and s, timeout=30)
        assert status["result"]["recipient_id"] == "up1"
        assert requests.get(f"{api}/healthz", timeout=10).json()["workers"] >= 1
        assert requests.get(f"http://127.0.0.1:{ports['flower']}/", auth=("ops", "up-pass"), timeout=10).ok
        assert "igsend_queue_depth" in requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10).text
        received = requests.get(f"http://127.0.0.1:{ports['sandbox']}/_sandbox/messages", timeout=10).json()
        assert received["messages"][0]["body"]["message"]["text"] == "hi"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, (tmp_path / "up.log").read_text()[-2000:]
    time.sleep(0.5)
    assert not redis_answers(env["IGSEND_REDIS_URL"])
    for name in ("api", "flower", "metrics", "sandbox"):
        try:
            requests.get(f"http://127.0.0.1:{ports[name]}/", timeout=1)
            raise AssertionError(f"{name} still answers after Ctrl-C")
        except requests.ConnectionError:
            pass


#: README.md's "A first message" from Python, with the recipient the sandbox answers, and logging on at INFO.
README_SNIPPET = """
import logging
logging.basicConfig(level=logging.INFO)
from producers import send_text
job = send_text("6543210987654321", "Hi")
print(job.result(timeout=30))
"""


def _start_up(tmp_path, env: dict[str, str], ports: dict[str, int], log_name: str) -> tuple[subprocess.Popen, str]:
    log = open(tmp_path / log_name, "w+")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "igsend.cli", "up", "--api-port", str(ports["api"]),
                                "--flower-port", str(ports["flower"]), "--metrics-port", str(ports["metrics"]),
                                "--sandbox-port", str(ports["sandbox"])], env=env, cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    wait_until(lambda: "igsend is up" in (tmp_path / log_name).read_text() or process.poll() is not None,
               timeout=120, interval=0.2)
    output = (tmp_path / log_name).read_text()
    assert process.poll() is None, output
    return process, output


def _stop_up(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.scenario
def test_up_runs_on_a_private_redis_and_keeps_its_credentials(tmp_path) -> None:
    """Nothing named: `igsend up` starts a Redis of its own (never one on 6379), says so first, generates the API
    key and the Flower login once (mode 0600 in the data directory) and reuses them; `igsend` commands in the same
    directory find its Redis."""
    ports = {name: free_port() for name in ("api", "flower", "metrics", "sandbox")}
    env = {k: v for k, v in os.environ.items()
           if k not in ("IGSEND_REDIS_URL", "IGSEND_API_KEYS", "IGSEND_FLOWER_AUTH", "IGSEND_DATA_DIR")}
    env.update({"IGSEND_ACCESS_TOKEN": "", "IGSEND_ACCOUNTS_FILE": "", "PYTHONUNBUFFERED": "1"})
    data = tmp_path / ".igsend"
    process, output = _start_up(tmp_path, env, ports, "up1.log")
    try:
        first = output.splitlines()[0].split()
        assert first[0] == "redis" and first[2:5] == ["(private,", "started", "by"], output
        redis_url = first[1]
        assert redis_url.startswith("redis://127.0.0.1:") and ":6379/" not in redis_url
        assert f"AOF in {data / 'redis'};" in output.splitlines()[0]
        secrets_file = data / "up-credentials.env"
        assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
        stored = dict(line.split("=", 1) for line in secrets_file.read_text().splitlines() if "=" in line
                      and not line.startswith("#"))
        assert f"credentials kept in {secrets_file}" in output
        assert f"(login {stored['IGSEND_FLOWER_AUTH']})" in output
        assert f"Authorization: Bearer {stored['IGSEND_API_KEYS']}" in output
        sent = requests.post(f"http://127.0.0.1:{ports['api']}/v1/messages",
                             json={"kind": "text", "recipient": "up2", "text": "hi"},
                             headers={"Authorization": f"Bearer {stored['IGSEND_API_KEYS']}"}, timeout=10)
        assert sent.status_code == 202 and sent.json()["warnings"] == []
        # a second terminal, same directory, nothing set: the CLI uses up's Redis
        by_hand = subprocess.run([sys.executable, "-m", "igsend.cli", "send", "text", "up3", "Hi", "--wait"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert by_hand.returncode == 0, by_hand.stderr
        assert json.loads(by_hand.stdout)["status"] == "delivered"
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        chosen = f"127.0.0.1:{port} db 0 (the running `igsend up`, pid {process.pid}, from .igsend/up.json)"
        assert by_hand.stderr.splitlines()[0] == f"redis: {chosen}"  # the CLI's first line says which Redis
        # ... and so does the README's Python first message, as written, in a script run in the same directory
        snippet = subprocess.run([sys.executable, "-c", README_SNIPPET], env=env, cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120)
        assert snippet.returncode == 0, snippet.stderr
        result = json.loads(snippet.stdout.replace("'", '"'))
        assert result["recipient_id"] == "6543210987654321" and result["message_id"]
        assert f"igsend uses Redis at {chosen}" in snippet.stderr  # at INFO, for a script with logging on
    finally:
        code = _stop_up(process)
    assert code == 0
    assert not (data / "up.json").exists()
    assert not redis_answers(redis_url)
    process, again = _start_up(tmp_path, env, ports, "up2.log")
    _stop_up(process)
    assert f"(login {stored['IGSEND_FLOWER_AUTH']})" in again  # the same credentials, reused
    assert f"Authorization: Bearer {stored['IGSEND_API_KEYS']}" in again
