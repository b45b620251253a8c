"""Flower on igsend's app: authentication on, and a sent message's task visible in a real headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

import producers
from igsend.core.celery_app import get_app
from tests.conftest import ALL_TOKENS, wait_until

pytestmark = pytest.mark.usefixtures("worker", "clean")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
USER, PASSWORD = "ops", "flower-test-password"


@pytest.fixture(scope="module")
def flower(redis_url, tmp_path_factory):
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    port = free_port()
    service = start_command("flower", ["flower", "--port", str(port)],
                            env={"IGSEND_REDIS_URL": redis_url, "IGSEND_FLOWER_AUTH": f"{USER}:{PASSWORD}"},
                            ready_url=f"http://127.0.0.1:{port}/healthcheck",
                            log_path=tmp_path_factory.mktemp("flower") / "flower.log", wait=60)
    yield f"http://127.0.0.1:{port}"
    service.stop()


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (ops/test installs it when run as root)")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=90)


def test_flower_refuses_anonymous_visitors(flower) -> None:
    assert requests.get(f"{flower}/tasks", timeout=10).status_code == 401
    assert requests.get(f"{flower}/api/tasks", timeout=10).status_code == 401
    assert requests.get(f"{flower}/tasks", auth=(USER, PASSWORD), timeout=10).status_code == 200


def test_a_sent_message_shows_in_flower_with_token_free_details(flower, tmp_path) -> None:
    """A producer's message goes out in its account's chunk (igsend.core.chunks): Flower shows the task
    ``igsend.send_chunk`` with the account, the send class and how many jobs, and what became of them; the job's
    own state is in its record (``igsend status``, the HTTP API). A raw client's ``igsend.send_message`` shows as
    itself, with kind, recipient and account."""
    job = producers.send_text("flower-recipient", "watch me in Flower")
    job.result(timeout=30)

    def chunk_task() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", params={"taskname": "igsend.send_chunk"}, auth=(USER, PASSWORD),
                             timeout=10).json()
        return next((dict(task, id=task_id) for task_id, task in tasks.items()
                     if task.get("args") == "['default', 'text', 1]" and task.get("state") == "SUCCESS"), None)

    task = wait_until(chunk_task, timeout=20)
    assert task["name"] == "igsend.send_chunk" and task["kwargs"] == "{'jobs': '1 job ids'}"
    assert "'delivered': 1" in task["result"] and "'account': 'default'" in task["result"]
    assert "watch me" not in str(task)

    raw = get_app().send_task("igsend.send_message", args=[{"kind": "text", "recipient": "flower-raw",
                                                            "text": "raw one", "account": "default"}])
    producers.Job(raw.id).result(timeout=30)
    def single_task() -> dict | None:
        info = requests.get(f"{flower}/api/task/info/{raw.id}", auth=(USER, PASSWORD), timeout=10)
        return info.json() if info.ok and info.json().get("state") == "SUCCESS" else None

    single = wait_until(single_task, timeout=20)
    assert single["state"] == "SUCCESS" and single["name"] == "igsend.send_message"
    assert "flower-raw" in single["args"] and "'account': 'default'" in single["args"]
    assert "'attempts': 1" in single["result"] and "message_id" in single["result"]

    task_id = task["id"]
    url = f"http://{USER}:{PASSWORD}@{flower.removeprefix('http://')}/task/{task_id}"
    page = _chromium("--virtual-time-budget=5000", "--dump-dom", url, profile=tmp_path / "profile")
    assert task_id in page.stdout, page.stderr[-2000:]
    assert "SUCCESS" in page.stdout
    assert "igsend.send_chunk" in page.stdout and "default" in page.stdout
    for token in ALL_TOKENS:
        assert token not in page.stdout
        assert token not in str(task) and token not in str(single)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "flower-task.png"
    _chromium("--window-size=1280,900", "--virtual-time-budget=5000", f"--screenshot={shot}", url,
              profile=tmp_path / "profile2")
    assert shot.exists() and shot.stat().st_size > 10_000
