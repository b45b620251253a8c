"""Retries, throttling, dead letters and account health, against the real worker and the sandbox.

These prove the wiring: the scheduler brings retries back when due, Retry-After travels from the sandbox to the
pause, healing sends what was held, the CLI drives the DLQ. Each policy decision on its own (which answer is
retried, dead-lettered, paused, held) is proved in-process, without a worker, in test_delivery_inprocess."""

from __future__ import annotations

import time

import pytest
import requests
from click.testing import CliRunner

import producers
from igsend.cli import main as cli
from igsend.core import dlq
from igsend.core.account_state import mark_healthy, state
from tests.conftest import received, wait_until

pytestmark = pytest.mark.usefixtures("worker", "clean")


def fault(sandbox: str, recipient: str, *faults: dict) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(faults)},
                  timeout=5).raise_for_status()


def test_transient_errors_are_retried_until_delivered(sandbox: str) -> None:
    fault(sandbox, "flaky1", {"code": 2, "status": 500, "is_transient": True}, {"code": 1, "status": 500})
    job = producers.send_text("flaky1", "third time lucky")
    result = job.result(timeout=30)
    info = job.info()
    assert info["status"] == "delivered" and info["attempts"] == 3
    assert [a["outcome"] for a in info["attempt_log"]] == ["transient", "transient", "delivered"]
    assert [a["code"] for a in info["attempt_log"][:2]] == [2, 1]
    assert result["message_id"]
    assert len(received(sandbox)) == 1



def test_throttled_message_waits_at_least_the_announced_time(sandbox: str) -> None:
    fault(sandbox, "busy1", {"code": 613, "subcode": 2534040, "retry_after": 2})
    job = producers.send_text("busy1", "after the pause")
    job.result(timeout=30)
    log = job.info()["attempt_log"]
    assert [a["outcome"] for a in log] == ["throttled", "delivered"]
    assert log[1]["at"] - log[0]["at"] >= 2.0





def test_broken_account_holds_its_queue_until_healed(sandbox: str) -> None:
    fault(sandbox, "victim", {"code": 190, "subcode": 463})
    first = producers.send_text("victim", "token expired")
    with pytest.raises(producers.MessageDead):
        first.result(timeout=30)
    assert state("default")["health"] == "broken"
    held = [producers.send_text(f"held{i}", "wait for the fix") for i in range(3)]
    wait_until(lambda: state("default")["held"] == 3)
    time.sleep(0.3)  # proves a negative: a held job that wrongly went out would have reached the sandbox by now
    assert all(job.status().value == "queued" for job in held)
    assert all(not e["body"]["recipient"]["id"].startswith("held") for e in received(sandbox))
    other = producers.send_text("someone", "other accounts keep going", account="shop")
    other.result(timeout=30)

    assert mark_healthy("default") == 3
    for job in held:
        job.result(timeout=30)
    assert state("default")["health"] == "healthy"


def test_dlq_list_show_replay_purge(sandbox: str) -> None:
    fault(sandbox, "replay1", {"code": 100, "subcode": 2018001})
    fault(sandbox, "purge1", {"code": 100, "subcode": 2018001})
    dead = producers.send_text("replay1", "second chance")
    doomed = producers.send_text("purge1", "to be purged")
    for job in (dead, doomed):
        with pytest.raises(producers.MessageDead):
            job.result(timeout=30)
    runner = CliRunner()

    listed = runner.invoke(cli, ["dlq", "list", "--json"])
    assert listed.exit_code == 0
    import json

    ids = [e["id"] for e in json.loads(listed.output)]
    assert sorted(ids) == sorted([dead.id, doomed.id])
    shown = runner.invoke(cli, ["dlq", "show", dead.id])
    assert json.loads(shown.output)["attempts"][0]["code"] == 100

    replayed = runner.invoke(cli, ["dlq", "replay", dead.id])
    assert replayed.exit_code == 0, replayed.output
    assert dead.result(timeout=30)["recipient_id"] == "replay1"  # the fault was used up: now it goes through
    info = dead.info()
    assert info["status"] == "delivered" and info["attempts"] == 2
    assert dlq.show(dead.id) is None

    assert runner.invoke(cli, ["dlq", "purge", "--older-than", "1h"]).output.count('"purged": 0') == 1
    purged = runner.invoke(cli, ["dlq", "purge", "--yes"])
    assert json.loads(purged.output) == {"purged": 1}
    assert dlq.list_entries() == []
    missing = runner.invoke(cli, ["dlq", "show", "nope"])
    assert missing.exit_code == 1 and "no dead-letter entry" in missing.output
