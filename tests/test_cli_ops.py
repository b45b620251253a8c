"""Operator-facing CLI guards: Redis risk warnings, Flower credentials and bind addresses, `dlq purge` ages and
confirmation, `dlq replay` of a job that is not dead. Real subprocesses, real Redis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from igsend.local.embedded_redis import find_redis_server, free_port, redis_answers
from tests.conftest import TOKEN, wait_until

IGSEND = [sys.executable, "-m", "igsend.cli"]


def igsend(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
           **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


# --- Redis risk warnings --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def risky_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis that may evict keys and keeps nothing across a restart, plus a user that may not run CONFIG."""
    port = free_port()
    directory = tmp_path_factory.mktemp("risky-redis")
    process = subprocess.Popen([find_redis_server() or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(directory), "--appendonly", "no", "--save", "",
                                "--maxmemory-policy", "allkeys-lru"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis_answers(url), timeout=15)
        redis_lib.Redis.from_url(url).acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["*"],
                                                  channels=["*"], commands=["+@all", "-config"])
        yield url
    finally:
        process.kill()
        process.wait()


def test_redis_warnings_name_eviction_and_persistence(risky_redis: str) -> None:
    from igsend.core.store import redis_warnings

    warnings = redis_warnings(redis_lib.Redis.from_url(risky_redis, decode_responses=True))
    assert len(warnings) == 2
    assert "allkeys-lru" in warnings[0] and "noeviction" in warnings[0]
    assert "persistence is off" in warnings[1]
    refused = redis_warnings(redis_lib.Redis.from_url(risky_redis.replace("//", "//noconfig:pw@"),
                                                      decode_responses=True))
    assert len(refused) == 1 and refused[0].startswith("could not check")


def test_cli_shows_redis_warnings_on_stderr_and_keeps_stdout_json(risky_redis: str) -> None:
    listed = igsend("accounts", "list", "--json", env={"IGSEND_REDIS_URL": risky_redis})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert [line.split(":")[0] for line in listed.stderr.splitlines()] == ["warning", "warning"]
    redis_lib.Redis.from_url(risky_redis).hset("igsend:job:w1", mapping={"id": "w1", "status": "queued"})
    status = igsend("status", "w1", env={"IGSEND_REDIS_URL": risky_redis})
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "queued"
    assert "maxmemory-policy is 'allkeys-lru'" in status.stderr
    limited = igsend("accounts", "list", env={"IGSEND_REDIS_URL": risky_redis.replace("//", "//noconfig:pw@")})
    assert limited.returncode == 0 and "warning: could not check" in limited.stderr


def test_worker_logs_redis_warnings_at_start(risky_redis: str, tmp_path: Path) -> None:
    from igsend.local.processes import start_worker

    log = tmp_path / "worker.log"
    worker = start_worker(env={"IGSEND_REDIS_URL": risky_redis.replace("/0", "/5"), "IGSEND_ACCESS_TOKEN": TOKEN,
                               "IGSEND_ACCOUNTS_FILE": "", "IGSEND_LOG_FORMAT": "text"},
                          log_path=log, concurrency=2)
    try:
        wait_until(lambda: "persistence is off" in log.read_text(), timeout=15)
    finally:
        worker.stop()
    assert "may evict queued messages" in log.read_text()


# --- Flower and bind addresses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [":pw", "user:", ":", " : ", "nocolon", ""])
def test_flower_refuses_empty_credentials(auth: str) -> None:
    run = igsend("flower", "--port", str(free_port()), env={"IGSEND_FLOWER_AUTH": auth}, timeout=30)
    assert run.returncode == 2
    assert run.stderr.startswith("error: IGSEND_FLOWER_AUTH must be set to user:password, both non-empty")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def loopback_alias_works() -> None:
    """127.0.0.2 reaches a socket bound to 0.0.0.0 but not one bound to 127.0.0.1: the probe used below."""
    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        if not _answers("127.0.0.2", wildcard.getsockname()[1]):
            pytest.skip("127.0.0.2 is not routed to loopback here")


def _only_on_loopback(port: int) -> None:
    assert _answers("127.0.0.1", port)
    assert not _answers("127.0.0.2", port), f"port {port} listens beyond 127.0.0.1"


@pytest.mark.usefixtures("loopback_alias_works")
def test_metrics_and_flower_listen_on_loopback_by_default(redis_url: str, tmp_path: Path) -> None:
    from igsend.local.processes import start_command

    metrics_port, flower_port = free_port(), free_port()
    services = [start_command("metrics", ["metrics", "--port", str(metrics_port)], env={"IGSEND_REDIS_URL": redis_url},
                              ready_url=f"http://127.0.0.1:{metrics_port}/metrics", log_path=tmp_path / "m.log")]
    try:
        services.append(start_command("flower", ["flower", "--port", str(flower_port)],
                                      env={"IGSEND_REDIS_URL": redis_url, "IGSEND_FLOWER_AUTH": "ops:pw"},
                                      ready_url=f"http://127.0.0.1:{flower_port}/healthcheck",
                                      log_path=tmp_path / "f.log", wait=60))
        _only_on_loopback(metrics_port)
        _only_on_loopback(flower_port)
        assert requests.get(f"http://127.0.0.1:{flower_port}/", auth=("ops", "pw"), timeout=10).ok
    finally:
        for service in services:
            service.stop()


@pytest.mark.usefixtures("loopback_alias_works")
def test_worker_metrics_endpoint_listens_on_loopback_by_default() -> None:
    port = free_port()
    code = (f"import os, time; os.environ['IGSEND_METRICS_PORT'] = '{port}'; "
            "from workers.metrics import serve_worker_metrics; serve_worker_metrics(); print('up', flush=True); "
            "time.sleep(30)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if k != "IGSEND_METRICS_HOST"})
    try:
        assert process.stdout.readline().strip() == "up"
        _only_on_loopback(port)
    finally:
        process.kill()
        process.wait()


# --- dlq purge / replay -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("age", ["-1", "-5m", "nan", "inf", "-inf", "NaNd", "abc", "7x", ""])
def test_purge_refuses_ages_that_are_not_ages(private_db: redis_lib.Redis, age: str) -> None:
    _dead_entry(private_db, "old1", status="dead")
    run = igsend("dlq", "purge", "--older-than", age)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("error: --older-than: must be a duration") and "Traceback" not in run.stderr
    assert private_db.zcard("igsend:dlq:index") == 1


def test_purge_everything_needs_yes_when_not_interactive(private_db: redis_lib.Redis) -> None:
    _dead_entry(private_db, "p1", status="dead")
    refused = igsend("dlq", "purge", stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert private_db.zcard("igsend:dlq:index") == 1
    assert json.loads(igsend("dlq", "purge", "--older-than", "1h").stdout) == {"purged": 0}
    assert json.loads(igsend("dlq", "purge", "--yes").stdout) == {"purged": 1}


def _dead_entry(client: redis_lib.Redis, job_id: str, *, status: str) -> None:
    from igsend.core.records import Outcomes

    message = {"kind": "text", "recipient": "r-" + job_id, "text": "hi", "account": "default"}
    client.hset(f"igsend:job:{job_id}", mapping={"id": job_id, "status": "queued", "kind": "text",
                                                 "account": "default", "recipient": message["recipient"],
                                                 "message": json.dumps(message)})
    Outcomes(client, record_ttl=3600).dead(job_id, "test", None, None)
    if status == "delivered":  # the record moved on after it was dead-lettered (e.g. delivered by a replay)
        client.hset(f"igsend:job:{job_id}", mapping={"status": "delivered", "result": json.dumps(
            {"recipient_id": message["recipient"], "message_id": "m-1"})})


def test_replay_of_a_job_that_is_not_dead_is_refused(private_db: redis_lib.Redis) -> None:
    _dead_entry(private_db, "was-delivered", status="delivered")
    _dead_entry(private_db, "really-dead", status="dead")
    one = igsend("dlq", "replay", "was-delivered")
    assert one.returncode == 1
    assert one.stderr.startswith("error: job was-delivered is delivered, not dead") and "Traceback" not in one.stderr
    every = igsend("dlq", "replay", "--all")
    assert every.returncode == 1  # not everything asked for was replayed
    outcome = json.loads(every.stdout)
    assert outcome["replayed"] == ["really-dead"] and list(outcome["refused"]) == ["was-delivered"]
    assert "error: job was-delivered is delivered" in every.stderr
    assert private_db.hget("igsend:job:really-dead", "status") == "queued"
    assert private_db.hget("igsend:job:was-delivered", "status") == "delivered"
