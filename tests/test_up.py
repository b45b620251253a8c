"""`igsend up`: the compose stack as local processes — every service answers, a message goes through the
HTTP API to the sandbox, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from igsend.local.embedded_redis import free_port, redis_answers
from tests.conftest import wait_until


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
