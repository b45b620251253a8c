"""One account never delays another, and a campaign never delays a reply (igsend.core.lanes): a real worker and the
sandbox, the order in which Meta's stand-in received the messages counted, never the time they took."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib
import requests

import producers
from igsend.core import lanes
from tests.conftest import received, wait_until

#: A worker of 16 threads against a Graph API answering in 200 ms: ~80 messages/s, below every budget involved,
#: so a backlog is the workers' own, not Meta's.
LATENCY_MS = 200


def _slow_graph(sandbox: str) -> None:
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": LATENCY_MS}, timeout=5).raise_for_status()


def _texts(account: str, prefix: str, count: int, **extra: str) -> list[dict]:
    return [{"kind": "text", "recipient": f"{prefix}{i}", "text": "hi", "account": account, **extra}
            for i in range(count)]


def _position(sandbox: str, recipient: str) -> tuple[int, list[str]]:
    """How many messages the sandbox received before ``recipient``'s, and the recipients in the order received."""
    order = [m["body"]["recipient"].get("id") or m["body"]["recipient"].get("comment_id") for m in received(sandbox)]
    return order.index(recipient), order


@pytest.mark.scenario  # many processes and seconds; the outcome does not hang on Python's version
def test_another_accounts_backlog_does_not_hold_a_reply(worker, clean, sandbox: str) -> None:
    """Account shop has 800 texts queued (its budget, 300/s, is above what the worker can do); then default's one
    reply. It waits behind what the dispatcher already handed out (IGSEND_DISPATCH_AHEAD, 200) and what the
    worker holds, not behind shop's whole backlog, which a FIFO queue would make it wait for."""
    _slow_graph(sandbox)
    campaign = producers.send_many(_texts("shop", "camp-a-", 800))
    assert len(campaign.queued) == 800
    reply = producers.send_text("reply-b", "hello", account="default")
    assert reply.result(timeout=120)["recipient_id"] == "reply-b"
    before, _ = _position(sandbox, "reply-b")
    assert before <= 200 + 16 + 50, before  # ahead + the worker's threads + a tick's worth; FIFO: 800
    wait_until(lambda: len(received(sandbox)) == 801, timeout=120)  # and the campaign still goes out in full


@pytest.mark.scenario  # many processes and seconds; the outcome does not hang on Python's version
def test_a_scheduled_campaign_that_comes_due_does_not_hold_another_accounts_reply(worker, clean, r: redis_lib.Redis,
                                                                                   sandbox: str) -> None:
    """Shop's 800 texts scheduled for one moment: when they come due they join shop's lane (its head), so
    default's reply sent then waits behind what the dispatcher handed out, not behind the 800, which the Celery
    queue's due list used to put ahead of every new message."""
    from igsend.core.store import DELAYED_KEY

    _slow_graph(sandbox)
    due = time.time() + 2
    campaign = producers.send_many(_texts("shop", "nine-", 800, send_at=due))  # type: ignore[arg-type]
    assert len(campaign.queued) == 800 and r.zcard(DELAYED_KEY) == 800
    wait_until(lambda: r.zcard(DELAYED_KEY) == 0, timeout=60)  # all came due and left the delayed set
    reply = producers.send_text("reply-nine", "hello", account="default")
    assert reply.result(timeout=120)["recipient_id"] == "reply-nine"
    before, order = _position(sandbox, "reply-nine")
    assert before <= 200 + 16 + 50, before  # ahead + the worker's threads + a tick's worth; the due list: ~800
    assert all(recipient.startswith("nine-") for recipient in order[:before])
    wait_until(lambda: len(received(sandbox)) == 801, timeout=120)  # and the campaign still goes out in full
    assert received(sandbox)[0]["received_at"] >= due - 0.05  # not before its time


@pytest.mark.scenario  # many processes and seconds; the outcome does not hang on Python's version
def test_a_normal_message_overtakes_its_accounts_bulk_ones(worker, clean, sandbox: str) -> None:
    _slow_graph(sandbox)
    campaign = producers.send_many(_texts("shop", "bulk-", 600, priority="bulk"))
    assert len(campaign.queued) == 600
    reply = producers.send_many(_texts("shop", "normal-", 1))
    assert reply.queued[0].result(timeout=120)["recipient_id"] == "normal-0"
    before, order = _position(sandbox, "normal-0")
    assert before <= 200 + 16 + 50, before  # behind what was already handed out, not behind the 600
    wait_until(lambda: len(received(sandbox)) == 601, timeout=120)


@pytest.mark.scenario  # many processes and seconds; the outcome does not hang on Python's version
def test_saturated_accounts_share_the_workers_equally(worker, clean, sandbox: str) -> None:
    """Two accounts' campaigns queued one after another, together more than the worker can do: while both have
    work, each gets about half of the deliveries (a FIFO queue serves them one after the other)."""
    _slow_graph(sandbox)
    accounts = ["default", "shop"]
    for account in accounts:
        producers.send_many(_texts(account, f"{account}-", 600))
    wait_until(lambda: len(received(sandbox)) >= 650, timeout=120)
    order = [m["body"]["recipient"]["id"].split("-")[0] for m in received(sandbox)]
    # both have work here: past what was handed out before the second campaign arrived, before either runs out;
    # 400 messages, 16 chunks of 25: one chunk more or less for an account moves its share by 6 %, not 12 %
    window = order[250:650]
    shares = {account: window.count(account) for account in accounts}
    assert min(shares.values()) >= 0.4 * len(window), shares  # FIFO: default 350, shop 50
    wait_until(lambda: len(received(sandbox)) == 1200, timeout=180)


@pytest.mark.scenario  # many processes and seconds; the outcome does not hang on Python's version
def test_a_class_waiting_for_its_budget_costs_nothing_per_message_and_holds_no_one(worker, clean, r: redis_lib.Redis,
                                                                                   sandbox: str) -> None:
    """200 private replies (750 an hour: one every 4.8 s) wait in their lane; the account's texts go on. Waiting
    costs nothing per message: no private reply but the first few has been through admission (parked with a
    rate slot), where a FIFO queue takes, admits and parks every one of them."""
    replies = producers.send_many([{"kind": "private_reply", "comment_id": f"c{i}", "text": "thanks",
                                    "account": "default"} for i in range(200)])
    assert len(replies.queued) == 200
    text = producers.send_text("after-replies", "hi", account="default")
    assert text.result(timeout=60)["recipient_id"] == "after-replies"
    parked = sum(1 for job in replies.queued if r.hexists(f"igsend:job:{job.id}", "slot_at"))
    assert parked <= 3, parked
    assert lanes.waiting(r)["default"]["private_reply/normal"] >= 190


def test_priority_everywhere_a_message_is_sent(private_db: redis_lib.Redis, tmp_path) -> None:
    """Python, CLI and send-bulk lines take a priority; send-bulk makes its lines bulk unless they say otherwise,
    and says so. Read back from the lanes of a Redis no worker consumes."""
    import json
    import os
    import subprocess
    import sys

    from producers import InvalidMessage

    producers.send_text("py", "hi", account="shop", priority="bulk")
    env = {**os.environ}  # IGSEND_REDIS_URL: private_db's
    cli = [sys.executable, "-m", "igsend.cli"]
    sent = subprocess.run([*cli, "send", "text", "cli", "hi", "--account", "shop", "--priority", "bulk"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    lines = tmp_path / "campaign.jsonl"
    lines.write_text("\n".join(json.dumps({"kind": "text", "recipient": f"b{i}", "text": "hi", "account": "shop"})
                               for i in range(3)) + "\n" + json.dumps({"kind": "text", "recipient": "n", "text": "hi",
                                                                       "account": "shop", "priority": "normal"}) + "\n")
    bulk = subprocess.run([*cli, "send-bulk", str(lines), "--no-wait"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert bulk.returncode == 0, bulk.stderr
    assert bulk.stderr.splitlines()[0].startswith("priority: bulk (send-bulk's default")
    assert lanes.waiting(private_db) == {"shop": {"text/bulk": 5, "text/normal": 1}}
    refused = subprocess.run([*cli, "send", "text", "x", "hi", "--priority", "urgent"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "'urgent' is not one of 'normal', 'bulk'" in refused.stderr
    try:
        producers.send_text("x", "hi", priority="urgent")
        raise AssertionError("accepted an unknown priority")
    except InvalidMessage as exc:
        assert str(exc) == "priority: must be normal or bulk (got 'urgent')"
