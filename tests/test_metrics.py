"""Prometheus metrics: the worker's and the exporter's endpoints export what the Grafana dashboard queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

import producers
from tests.conftest import wait_until

DASHBOARD = Path(__file__).resolve().parent.parent / "ops" / "grafana" / "dashboards" / "igsend.json"
PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "le", "account", "status", "outcome", "code", "reason",
                "how", "m", "endpoint"}

pytestmark = pytest.mark.usefixtures("worker", "clean")


@pytest.fixture
def exporter(redis_url, tmp_path):
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    port = free_port()
    callbacks_file = tmp_path / "callbacks.toml"  # the dashboard's callback panels read its endpoints
    callbacks_file.write_text('[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret = "whsec_'
                              'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n')
    service = start_command("metrics", ["metrics", "--port", str(port)], env={
        "IGSEND_REDIS_URL": redis_url, "IGSEND_CALLBACKS_FILE": str(callbacks_file)},
        ready_url=f"http://127.0.0.1:{port}/metrics", log_path=tmp_path / "metrics.log")
    yield f"http://127.0.0.1:{port}/metrics"
    service.stop()


def _names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_dashboard_queries_is_exported(exporter, worker_metrics_port, sandbox) -> None:
    # one of each event the dashboard plots: a delivery, a dead letter, a retry, rate waits, a paused account
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "m2", "faults": [{"code": 2, "status": 500}]},
                  timeout=5).raise_for_status()
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "m3", "faults": [{"code": 4, "retry_after": 1}]},
                  timeout=5).raise_for_status()
    jobs = [producers.send_text("m1", "counted"), producers.send_text("m2", "retried"),
            producers.send_text("m3", "throttled")]
    jobs += [producers.send_text(f"slow{i}", "rate limited", account="slow") for i in range(4)]
    for job in jobs:
        job.result(timeout=30)
    with pytest.raises(producers.MessageDead):
        producers.send_text("ERR_100_2018001", "dead one").result(timeout=30)
    worker_text = requests.get(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=5).text
    exporter_text = requests.get(exporter, timeout=5).text
    exported = _names(worker_text) | _names(exporter_text)

    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queried |= {w for w in re.findall(r"[a-z_][a-z0-9_]*", target["expr"]) if w not in PROMQL_WORDS}
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"queried but not exported: {sorted(queried - exported)}"

    delivered = re.search(r'igsend_messages_total\{account="default",kind="text",status="delivered"\} (\S+)',
                          worker_text)
    assert delivered and float(delivered.group(1)) >= 1
    assert re.search(r'igsend_attempts_total\{account="default",code="100",kind="text",outcome="permanent"\}',
                     worker_text)
    wait_until(lambda: "igsend_dlq_size 1.0" in requests.get(exporter, timeout=5).text, timeout=10)


def test_the_exporter_counts_messages_the_sweeper_republished(exporter, r) -> None:
    from igsend.core.store import STATS_KEY

    r.hset(STATS_KEY, "republished_total", 3)  # what three sweeper finds leave behind
    wait_until(lambda: "igsend_republished_total 3.0" in requests.get(exporter, timeout=5).text, timeout=10)
    text = requests.get(exporter, timeout=5).text
    assert "igsend_redis_used_memory_bytes" in text and "igsend_redis_maxmemory_bytes" in text


def test_invalid_documents_never_mint_metric_labels(worker_metrics_port) -> None:
    # A raw publish may carry any account and kind; a caller-chosen label would be a new time series each time.
    from igsend.core.celery_app import TASK_NAME, get_app

    job_id = "label-test-job"
    get_app().send_task(TASK_NAME, args=[{"kind": "kind-from-a-caller", "recipient": "r", "account": "acct-XYZ-123"}],
                        task_id=job_id, queue="igsend")
    wait_until(lambda: producers.Job(job_id).status().value == "dead", timeout=30)
    text = requests.get(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=5).text
    assert "acct-XYZ-123" not in text and "kind-from-a-caller" not in text
    assert 'igsend_messages_total{account="invalid",kind="invalid",status="dead"}' in text


def test_what_waits_in_the_lanes_is_exported_for_prometheus_and_keda(private_db, tmp_path) -> None:
    """New messages wait in their account's lane (igsend.core.lanes) until a dispatcher hands them out: with no
    worker on this Redis they stay there, and the exporter counts them where Prometheus and KEDA read."""
    import os

    import producers
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    producers.send_many([{"kind": "text", "recipient": f"w{i}", "text": "hi", "priority": "bulk"} for i in range(3)])
    producers.send_text("w", "a reply", account="shop")
    port = free_port()
    service = start_command("metrics", ["metrics", "--port", str(port)],
                            env={"IGSEND_REDIS_URL": os.environ["IGSEND_REDIS_URL"]},
                            ready_url=f"http://127.0.0.1:{port}/metrics", log_path=tmp_path / "metrics.log")
    try:
        assert requests.get(f"http://127.0.0.1:{port}/waiting.json", timeout=5).json() == {
            "waiting": 4, "queue": 0, "lanes": 4}
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        service.stop()
    assert 'igsend_lane_waiting{account="default",priority="bulk",send_class="text"} 3.0' in text
    assert 'igsend_lane_waiting{account="shop",priority="normal",send_class="text"} 1.0' in text
    assert "igsend_waiting 4.0" in text


def test_each_callback_endpoint_is_exported_with_its_counters_queue_and_lag(private_db, tmp_path,
                                                                           monkeypatch) -> None:
    """The exporter reads each endpoint of its IGSEND_CALLBACKS_FILE from Redis (igsend.core.callbacks.state)."""
    import time

    from prometheus_client import CollectorRegistry, generate_latest

    from igsend.core import callbacks
    from tests.test_callbacks import SECRET
    from workers.metrics import RedisStateCollector

    path = tmp_path / "callbacks.toml"
    path.write_text(f'[endpoints.crm]\nurl = "https://crm.example.com/x"\nsecret = "{SECRET}"\n'
                    f'[endpoints.erp]\nurl = "https://erp.example.com/x"\nsecret = "{SECRET}"\n')
    monkeypatch.setenv("IGSEND_CALLBACKS_FILE", str(path))
    private_db.hset(callbacks.key("crm", "stats"), mapping={"sent": 5, "failed": 1, "retries": 3})
    oldest = time.time() - 120  # an event queued two minutes ago, and one more
    for at in (oldest, oldest + 60):
        private_db.rpush(callbacks.key("crm", "queue"), json.dumps(
            {"webhook_id": f"msg_{at}", "type": "message.delivered", "job": "j", "account": "default", "at": at}))
    private_db.hset(callbacks.key("erp", "stats"), mapping={"state": "disabled", "disabled": "410 Gone"})
    registry = CollectorRegistry()
    registry.register(RedisStateCollector())
    text = generate_latest(registry).decode()
    assert 'igsend_callbacks_sent_total{endpoint="crm"} 5.0' in text
    assert 'igsend_callbacks_failed_total{endpoint="crm"} 1.0' in text
    assert 'igsend_callbacks_retries_total{endpoint="crm"} 3.0' in text
    assert 'igsend_callbacks_queued{endpoint="crm"} 2.0' in text
    lag = re.search(r'igsend_callbacks_lag_seconds\{endpoint="crm"\} (\S+)', text)
    assert lag and float(lag.group(1)) >= 120  # at least the oldest event's age
    for line in ('igsend_callbacks_queued{endpoint="erp"} 0.0', 'igsend_callbacks_lag_seconds{endpoint="erp"} 0.0',
                 'igsend_callbacks_enabled{endpoint="crm"} 1.0', 'igsend_callbacks_enabled{endpoint="erp"} 0.0'):
        assert line in text, line
    monkeypatch.delenv("IGSEND_CALLBACKS_FILE")
    without = CollectorRegistry()
    without.register(RedisStateCollector())
    assert "igsend_callbacks" not in generate_latest(without).decode()
