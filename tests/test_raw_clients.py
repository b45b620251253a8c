"""Raw Celery clients as first-class producers: the exact calls docs/sending.md "Raw Celery clients"
documents.

- where a raw publish waits: in line with igsend's own backlog, never ahead of it (checked in a Redis no worker
  consumes, popped the way kombu pops);
- a raw job reads ``queued`` while its message is in the broker (no record yet), ``not_found`` otherwise;
- Celery in another Python app, plain kombu and celery-node each get their message delivered by the session's
  real worker, and a raw client's failure carries Meta's error code and subcode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery
from kombu import Connection

import producers
from igsend.core.celery_app import DUE_PRIORITY, PRIORITY_STEPS, QUEUE, TASK_NAME, get_app, publish, queue_keys
from igsend.core.chunks import job_ids_in
from producers import JobStatus
from tests.conftest import received, wait_until

NODE_CLIENT = Path(__file__).parent / "clients" / "node"


# --- the documented calls, as a Python app outside igsend would write them ------------------------------------

def celery_client(broker_url: str) -> Celery:
    """Celery in another app: no igsend code, no igsend configuration, Celery's defaults (JSON)."""
    return Celery("other-app", broker=broker_url, backend=broker_url)


def send_with_celery(client: Celery, document: dict[str, Any]) -> Any:
    return client.send_task("igsend.send_message", args=[document], queue="igsend")


def send_with_kombu(broker_url: str, document: dict[str, Any], job_id: str) -> None:
    """Celery's message protocol 2 by hand: body [args, kwargs, embed], the task name and id in the headers."""
    with Connection(broker_url) as connection:
        connection.Producer(serializer="json").publish(
            [[document], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
            routing_key="igsend", exchange="", declare=[],
            headers={"lang": "py", "task": "igsend.send_message", "id": job_id, "root_id": job_id,
                     "parent_id": None, "group": None})


# --- where a raw publish waits ---------------------------------------------------------------------------------

def _pop_order(app: Celery) -> list[str]:
    """Job ids in the order a worker would take them (a chunk's, igsend.core.chunks, in its order): kombu's own
    channel, which reads the priority lists in ``priority_steps`` order as its BRPOP does (kombu redis.py ``_get`` /
    ``_brpop_start``)."""
    ids = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        assert list(channel.priority_steps) == PRIORITY_STEPS  # igsend's layout reached the transport
        while (message := channel.basic_get(QUEUE, no_ack=True)) is not None:
            ids.extend(job_ids_in({"headers": message.headers}))
    return ids


def test_kombu_maps_every_priority_but_due_to_the_bare_backlog_list(private_db: redis_lib.Redis) -> None:
    with get_app().connection_for_write() as connection:
        channel = connection.default_channel
        mapped = {p: channel._q_for_pri(QUEUE, p) for p in range(10)}
    assert mapped.pop(DUE_PRIORITY) == queue_keys()[0]  # popped first
    assert set(mapped.values()) == {QUEUE} == {queue_keys()[-1]}  # none, 0, 1, 3-9: the backlog, popped last


def _hand_out(client: redis_lib.Redis) -> None:
    """What the scheduler's leader does every few milliseconds: new messages from their lanes onto the queue."""
    from workers.scheduler import Scheduler

    while Scheduler(client, ahead=1000).dispatch():
        pass


def test_a_raw_publish_without_priority_does_not_overtake_the_backlog(private_db: redis_lib.Redis,
                                                                       redis_url: str) -> None:
    """Raw publishes go straight onto the Celery queue (igsend's own messages reach it through their lanes, the
    dispatcher keeping it short): they wait behind what is on it, FIFO; only due jobs go first."""
    backlog = [producers.send_text(f"backlog{i}", "queued by igsend").id for i in range(5)]
    _hand_out(private_db)
    url = redis_url.rsplit("/", 1)[0] + "/1"  # the private db: no worker takes anything away
    raw_celery = send_with_celery(celery_client(url), {"kind": "text", "recipient": "raw", "text": "x"}).id
    raw_kombu = str(uuid.uuid4())
    send_with_kombu(url, {"kind": "text", "recipient": "raw", "text": "x"}, raw_kombu)
    raw_node = str(uuid.uuid4())  # what celery-node does: LPUSH to the bare queue name, no priority
    private_db.lpush(QUEUE, json.dumps({"body": "", "content-type": "application/json", "content-encoding": "utf-8",
                                        "headers": {"lang": "js", "task": TASK_NAME, "id": raw_node},
                                        "properties": {"body_encoding": "base64", "delivery_tag": raw_node,
                                                       "delivery_info": {"exchange": "", "routing_key": QUEUE}}}))
    later = producers.send_text("later", "queued by igsend after the raw ones").id
    _hand_out(private_db)
    app = get_app()
    due = str(uuid.uuid4())
    with app.producer_or_acquire() as producer:  # a retry whose time has come (scheduler, sweeper)
        publish(app, producer, due, {"kind": "text", "recipient": "due", "text": "x", "account": "default"},
                priority=DUE_PRIORITY)
    assert _pop_order(app) == [due, *backlog, raw_celery, raw_kombu, raw_node, later]


# --- what a raw job's status says before a worker takes it -----------------------------------------------------

def test_a_raw_job_reads_queued_while_its_message_is_in_the_broker(private_db: redis_lib.Redis,
                                                                    redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/1"
    producers.send_text("someone", "an igsend job in the same queue")
    job_id = send_with_celery(celery_client(url), {"kind": "text", "recipient": "raw", "text": "x"}).id
    job = producers.Job(job_id)
    assert job.status() is JobStatus.QUEUED
    assert job.info() == {"id": job_id, "status": "queued", "attempts": 0}
    assert producers.get_job(job_id) == job  # `igsend status` and GET /v1/messages/{id} start here
    stranger = producers.Job(str(uuid.uuid4()))
    assert stranger.status() is JobStatus.NOT_FOUND
    with pytest.raises(producers.JobNotFound):
        producers.get_job(stranger.id)

    # a worker took it (kombu's unacked hash) and has not written a record yet: still queued
    with get_app().connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(QUEUE, no_ack=False)) is not None and message.headers["id"] != job_id:
            message.ack()
        assert message is not None
        assert private_db.hlen("unacked") >= 1
        assert job.status() is JobStatus.QUEUED
        message.ack()  # gone from the broker, and no worker ever recorded it
    assert job.status() is JobStatus.NOT_FOUND


def test_the_scan_reads_a_deep_queue_slice_by_slice(private_db: redis_lib.Redis, redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from igsend.core import celery_app

    monkeypatch.setattr(celery_app, "IN_BROKER_SLICE", 3)
    url = redis_url.rsplit("/", 1)[0] + "/1"
    deep = send_with_celery(celery_client(url), {"kind": "text", "recipient": "raw", "text": "x"}).id
    producers.send_many([{"kind": "text", "recipient": f"r{i}", "text": "newer"} for i in range(10)])
    assert private_db.lindex(QUEUE, -1) and json.loads(private_db.lindex(QUEUE, -1))["headers"]["id"] == deep
    assert producers.Job(deep).status() is JobStatus.QUEUED
    assert producers.Job(str(uuid.uuid4())).status() is JobStatus.NOT_FOUND


# --- each documented call, delivered by the real worker --------------------------------------------------------

with_worker = pytest.mark.usefixtures("worker", "clean")


@with_worker
def test_celery_send_task_from_another_python_app(redis_url: str, sandbox: str) -> None:
    client = celery_client(redis_url)
    result = send_with_celery(client, {"kind": "text", "recipient": "pyraw1", "text": "from another app"})
    value = result.get(timeout=30)
    assert value["recipient_id"] == "pyraw1" and value["message_id"]
    assert {key: value[key] for key in ("account", "kind", "attempts")} == {"account": "default", "kind": "text",
                                                                             "attempts": 1}
    assert producers.Job(result.id).result(timeout=5) == {"recipient_id": "pyraw1",
                                                          "message_id": value["message_id"]}
    assert len(received(sandbox, recipient="pyraw1")) == 1


@with_worker
def test_a_raw_client_failure_carries_the_graph_code_and_subcode(redis_url: str) -> None:
    result = send_with_celery(celery_client(redis_url), {"kind": "text", "recipient": "ERR_100_2018001",
                                                          "text": "refused"})
    with pytest.raises(Exception) as caught:
        result.get(timeout=30)
    exc = caught.value
    assert type(exc).__name__ == "DeadLettered" and result.status == "FAILURE"
    text, detail = exc.args
    assert text.startswith("dead: ") and "(Graph error 100/2018001)" in text
    assert detail["status"] == "dead" and detail["code"] == 100 and detail["subcode"] == 2018001
    assert detail["class"] and detail["reason"] and detail["message"]


@with_worker
def test_plain_kombu_protocol_2_message(redis_url: str, sandbox: str) -> None:
    job_id = str(uuid.uuid4())
    send_with_kombu(redis_url, {"kind": "text", "recipient": "komburaw1", "text": "from kombu"}, job_id)
    assert producers.Job(job_id).result(timeout=30)["recipient_id"] == "komburaw1"
    assert len(received(sandbox, recipient="komburaw1")) == 1


def _node_client() -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("celery-node needs node and npm, which are not installed here")
    if not (NODE_CLIENT / "node_modules" / "celery-node").is_dir():
        install = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, capture_output=True,
                                 text=True, timeout=300, check=False)
        assert install.returncode == 0, f"npm ci in {NODE_CLIENT} failed: {install.stderr[-2000:]}"
    return NODE_CLIENT / "send.js"


def _node_send(script: Path, redis_url: str, document: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(["node", str(script), redis_url, json.dumps(document)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@with_worker
def test_celery_node_send_task(redis_url: str, sandbox: str) -> None:
    script = _node_client()
    answer = _node_send(script, redis_url, {"kind": "text", "recipient": "noderaw1", "text": "from Node"})
    assert answer["ok"], answer
    assert answer["result"]["recipient_id"] == "noderaw1" and answer["result"]["attempts"] == 1
    assert producers.Job(answer["id"]).status() is JobStatus.DELIVERED
    assert len(received(sandbox, recipient="noderaw1")) == 1

    failed = _node_send(script, redis_url, {"kind": "text", "recipient": "ERR_551_1545041", "text": "refused"})
    assert not failed["ok"] and failed["status"] == "FAILURE" and failed["exc_type"] == "DeadLettered", failed
    text, detail = failed["exc_message"]
    assert "(Graph error 551/1545041)" in text and (detail["code"], detail["subcode"]) == (551, 1545041)
    wait_until(lambda: producers.Job(failed["id"]).status() is JobStatus.DEAD, timeout=5)
