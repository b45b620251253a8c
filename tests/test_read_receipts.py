"""Read receipts and reactions linked to the job that sent the message: a real worker delivers through the
sandbox, a real ``igsend api`` receives Meta's signed ``messaging_seen`` and ``message_reactions`` webhooks for
that message, and the job's status and the inbound stream show the link."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
import requests

import producers
from igsend.core import inbound
from tests.conftest import ACCOUNT_ID, wait_until

APP_SECRET = "app-secret-for-read-receipts"
PERSON = "17841499999999001"


@pytest.fixture(scope="module")
def webhooks(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``igsend api`` on the Redis the session's worker sends from: its webhook receiver's URL."""
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    port = free_port()
    service = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                            env={"IGSEND_REDIS_URL": redis_url, "IGSEND_API_KEYS": "read-receipts-key",
                                 "IGSEND_APP_SECRET": APP_SECRET, "IGSEND_WEBHOOK_VERIFY_TOKEN": "verify-0123456789"},
                            ready_url=f"http://127.0.0.1:{port}/openapi.json",
                            log_path=tmp_path_factory.mktemp("logs") / "read-receipts-api.log")
    yield f"http://127.0.0.1:{port}/webhooks/instagram"
    service.stop()


def deliver_webhook(url: str, *items: dict[str, Any]) -> None:
    """One signed delivery from Meta to ``url``: ``items`` are messaging items to the business account."""
    body = json.dumps({"object": "instagram", "entry": [{"id": ACCOUNT_ID, "time": int(time.time() * 1000),
                                                          "messaging": list(items)}]}).encode()
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(url, data=body, timeout=10,
                           headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert answer.status_code == 200, answer.text


def from_person(ms: int, **what: Any) -> dict[str, Any]:
    return {"sender": {"id": PERSON}, "recipient": {"id": ACCOUNT_ID}, "timestamp": ms, **what}


def inbound_events(r: redis_lib.Redis, kind: str) -> list[dict[str, str]]:
    return [fields for _, fields in r.xrange(inbound.INBOUND_KEY) if fields.get("type") == kind]


@pytest.mark.usefixtures("worker", "clean")
def test_a_read_receipt_sets_read_at_on_the_job_that_sent_the_message(webhooks: str, r: redis_lib.Redis) -> None:
    job = producers.send_text(PERSON, "did you see this?")
    other = producers.send_text(PERSON, "and this one?")
    mid = job.result(timeout=30)["message_id"]
    other.result(timeout=30)
    assert job.info()["read_at"] is None
    read_ms = int(time.time() * 1000)
    deliver_webhook(webhooks, from_person(read_ms, read={"mid": mid}))
    wait_until(lambda: job.info()["read_at"] is not None, timeout=20)
    info = job.info()
    assert info["status"] == "delivered"  # read is not a status: "delivered" still means accepted by Meta
    assert info["read_at"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(read_ms / 1000)) + \
        f".{read_ms % 1000:03d}Z"
    assert other.info()["read_at"] is None  # only the message the receipt names
    [event] = inbound_events(r, "read")
    assert event["mid"] == mid and event["job_id"] == job.id
    # Meta's retry of the receipt, or a later one, keeps the first time.
    deliver_webhook(webhooks, from_person(read_ms + 60_000, read={"mid": mid}))
    wait_until(lambda: len(inbound_events(r, "read")) == 2, timeout=20)
    assert job.info()["read_at"] == info["read_at"]


@pytest.mark.usefixtures("worker", "clean")
def test_a_reaction_to_a_sent_message_names_its_job_and_one_to_another_message_names_none(
        webhooks: str, r: redis_lib.Redis) -> None:
    job = producers.send_text(PERSON, "react to me")
    mid = job.result(timeout=30)["message_id"]
    now = int(time.time() * 1000)
    deliver_webhook(webhooks,
                    from_person(now, reaction={"mid": mid, "action": "react", "reaction": "love", "emoji": "❤️"}),
                    from_person(now + 1, reaction={"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEnot-ours",
                                                   "action": "react", "reaction": "like", "emoji": "👍"}),
                    from_person(now + 2, read={"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEnot-ours"}))
    wait_until(lambda: len(inbound_events(r, "reaction")) == 2 and inbound_events(r, "read"), timeout=20)
    ours, theirs = inbound_events(r, "reaction")
    assert (ours["job_id"], ours["emoji"], ours["mid"]) == (job.id, "❤️", mid)
    assert theirs["job_id"] == "" and inbound_events(r, "read")[0]["job_id"] == ""
    assert job.info()["read_at"] is None  # a reaction is not a read receipt
