"""End to end: the public Python API -> Redis -> a real worker process -> the sandbox Graph API -> the job record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

import producers
from schemas import graph_body, load_message
from tests.conftest import ACCOUNT_ID, ALL_TOKENS, SHOP_PAGE_ID, TOKEN, queue_depth, received, wait_until
from workers.accounts import DEFAULT_API_VERSION

pytestmark = pytest.mark.usefixtures("worker", "clean")

RECIPIENT = "6543210987654321"

EVERY_KIND = [
    ("text", lambda **kw: producers.send_text(RECIPIENT, "Héllo 👋", **kw)),
    ("link", lambda **kw: producers.send_link(RECIPIENT, "https://example.com/a?b=1", **kw)),
    ("image", lambda **kw: producers.send_attachment(RECIPIENT, "image", "https://cdn.example.com/a.png", **kw)),
    ("gif", lambda **kw: producers.send_attachment(RECIPIENT, "gif", "https://cdn.example.com/a.gif", **kw)),
    ("video", lambda **kw: producers.send_attachment(RECIPIENT, "video", "https://cdn.example.com/a.mp4", **kw)),
    ("audio", lambda **kw: producers.send_attachment(RECIPIENT, "audio", "https://cdn.example.com/a.m4a", **kw)),
    ("post", lambda **kw: producers.send_post(RECIPIENT, "17895695668004550", **kw)),
    ("sticker", lambda **kw: producers.send_sticker(RECIPIENT, **kw)),
    ("react", lambda **kw: producers.react(RECIPIENT, "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUl", "love", **kw)),
    ("unreact", lambda **kw: producers.unreact(RECIPIENT, "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUl", **kw)),
]
# The same messages as documents: a delivered job keeps no text, so the expected bodies come from here.
DOCUMENTS = {
    "text": {"text": "Héllo 👋"}, "link": {"url": "https://example.com/a?b=1"},
    "image": {"url": "https://cdn.example.com/a.png"}, "gif": {"url": "https://cdn.example.com/a.gif"},
    "video": {"url": "https://cdn.example.com/a.mp4"}, "audio": {"url": "https://cdn.example.com/a.m4a"},
    "post": {"post_id": "17895695668004550"}, "sticker": {},
    "react": {"message_id": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUl", "reaction": "love"},
    "unreact": {"message_id": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUl"},
}


@pytest.mark.parametrize("account", ["default", "shop"])
def test_every_kind_is_delivered_with_the_documented_request(sandbox: str, account: str) -> None:
    jobs = {kind: send(account=account) for kind, send in EVERY_KIND}
    results = {kind: job.result(timeout=30) for kind, job in jobs.items()}

    for kind, result in results.items():
        assert result["recipient_id"] == RECIPIENT
        if kind in ("react", "unreact"):
            assert "message_id" not in result  # Meta answers react/unreact with recipient_id only
        else:
            assert result["message_id"]
    assert len({r["message_id"] for r in results.values() if "message_id" in r}) == 8

    wire = received(sandbox)
    assert len(wire) == len(EVERY_KIND)
    account_id = ACCOUNT_ID if account == "default" else SHOP_PAGE_ID
    expected_type = "application/json" if account == "default" else "application/x-www-form-urlencoded"
    by_id = {entry["message_id"]: entry for entry in wire if entry.get("message_id")}
    for kind, job in jobs.items():
        info = job.info()
        assert info["status"] == "delivered" and info["attempts"] == 1
        expected_body = graph_body(load_message({"kind": kind, "recipient": RECIPIENT, "account": account,
                                                 **DOCUMENTS[kind]}))
        if "message_id" in results[kind]:
            entry = by_id[results[kind]["message_id"]]
        else:
            entry = next(e for e in wire if e["body"].get("sender_action") == kind)
        assert entry["path"] == f"/{DEFAULT_API_VERSION}/{account_id}/messages"
        assert entry["token_placement"] == "header"
        assert entry["content_type"] == expected_type
        assert entry["body"] == expected_body


def test_status_moves_from_queued_through_sending_to_delivered(sandbox: str) -> None:
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 400}, timeout=5).raise_for_status()
    job = producers.send_text(RECIPIENT, "slow one")
    seen = [job.status().value]
    wait_until(lambda: seen.append(job.status().value) or seen[-1] == "delivered", timeout=20, interval=0.01)
    assert seen[0] in ("queued", "sending")
    assert "sending" in seen
    collapsed = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert collapsed in (["queued", "sending", "delivered"], ["sending", "delivered"])
    info = job.info()
    assert info["delivered_at"] >= info["created_at"]
    assert info["attempt_log"][0]["latency_ms"] >= 400


def test_get_job_from_another_process(redis_url: str) -> None:
    job = producers.send_text(RECIPIENT, "from elsewhere")
    code = f"from producers import get_job; import json; print(json.dumps(get_job({job.id!r}).result(timeout=30)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "IGSEND_REDIS_URL": redis_url}, check=True)
    assert json.loads(out.stdout) == job.result(timeout=1)


def test_unknown_job_id_is_reported() -> None:
    with pytest.raises(producers.JobNotFound):
        producers.get_job("no-such-job")
    assert producers.Job("no-such-job").status() is producers.JobStatus.NOT_FOUND


def test_invalid_input_raises_and_enqueues_nothing(r) -> None:
    before = queue_depth(r)
    with pytest.raises(producers.InvalidMessage) as caught:
        producers.send_text(RECIPIENT, "é" * 501)
    assert str(caught.value) == "text: must be at most 1000 UTF-8 bytes (got 1002)"
    assert queue_depth(r) == before
    assert not list(r.scan_iter("igsend:job:*"))


def test_token_is_nowhere_in_redis_nor_in_the_worker_log(r, worker_log, sandbox: str) -> None:
    jobs = [send() for _, send in EVERY_KIND]
    jobs.append(producers.send_text("ERR_100_2018001", "to nobody"))  # a dead letter too
    for job in jobs:
        try:
            job.result(timeout=30)
        except producers.JobError:
            pass
    dumped = []
    for key in r.scan_iter("*", count=1000):
        kind = r.type(key)
        if kind == "string":
            dumped.append(r.get(key))
        elif kind == "hash":
            dumped.extend(f"{k}={v}" for k, v in r.hgetall(key).items())
        elif kind == "list":
            dumped.extend(r.lrange(key, 0, -1))
        elif kind == "set":
            dumped.extend(r.smembers(key))
        elif kind == "zset":
            dumped.extend(m for m, _ in r.zrange(key, 0, -1, withscores=True))
        dumped.append(key)
    blob = "\n".join(str(d) for d in dumped)
    assert "igsend:dlq" in blob  # the scan saw igsend's keys, the dead letter included
    log = worker_log.read_text()
    assert "send job=" in log  # the log has the per-attempt lines
    for token in ALL_TOKENS:
        assert token not in blob
        assert token not in log
    assert TOKEN not in json.dumps(received(sandbox))
