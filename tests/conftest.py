"""Shared fixtures: a real Redis, the sandbox Graph API and a real ``igsend worker`` process.

The suite starts its own Redis (AOF on, in a temporary directory) instead of using whatever answers on 6379,
so it never touches anyone's data and runs the same on a machine with no Redis service.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_lib
import requests

TOKEN = "IGQtesttoken" + "x" * 40  # shaped like an Instagram-Login token, so the redaction filter knows it
SHOP_TOKEN = "EAAshoptoken" + "y" * 40  # shaped like a Page token (Facebook Login)
SLOW_TOKEN = "slow-account-token-1234567890"
ACCOUNT_ID = "17841400000000001"
SHOP_PAGE_ID = "104000000000001"
SLOW_ACCOUNT_ID = "17841400000000003"
ALL_TOKENS = [TOKEN, SHOP_TOKEN, SLOW_TOKEN]


def reset_client_caches() -> None:
    """Settings, Redis clients and the Celery app are cached per process; tests that change the env reset them."""
    from igsend.core.store import forget_connections

    forget_connections()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set these environment variables for the block (the cached clients reset), then put back what was there
    before, unset where nothing was (the clients reset again): for fixtures of any scope, unlike monkeypatch."""
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in values.items():
                patch.setenv(name, value)
            reset_client_caches()
            yield
    finally:
        reset_client_caches()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from igsend.local.embedded_redis import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> Iterator[str]:
    with environment(IGSEND_REDIS_URL=redis_server):
        yield redis_server


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=ALL_TOKENS, log_path=tmp_path_factory.mktemp("logs") / "sandbox.log")
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def accounts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("accounts") / "accounts.toml"
    path.write_text(f"""
[accounts.shop]
id = "{SHOP_PAGE_ID}"
login = "facebook"
token_env = "TEST_SHOP_TOKEN"

[accounts.slow]
id = "{SLOW_ACCOUNT_ID}"
token = "{SLOW_TOKEN}"
[accounts.slow.limits]
text_per_second = 4
media_per_second = 1
""")
    return path


def worker_env(redis_url: str, sandbox: str, accounts_file: Path, **extra: str) -> dict[str, str]:
    return {
        "IGSEND_REDIS_URL": redis_url,
        "IGSEND_GRAPH_URL": sandbox,
        "IGSEND_ACCESS_TOKEN": TOKEN,
        "IGSEND_ACCOUNT_ID": ACCOUNT_ID,
        "IGSEND_LOGIN": "instagram",
        "IGSEND_ACCOUNTS_FILE": str(accounts_file),
        "TEST_SHOP_TOKEN": SHOP_TOKEN,
        "IGSEND_RETRY_BASE": "0.2",
        "IGSEND_RETRY_CAP": "1",
        "IGSEND_MAX_ATTEMPTS": "4",
        # short deadlines: a killed worker's message is back in ~25 s (visibility timeout = 3 x 5 + 10)
        "IGSEND_SEND_DEADLINE": "5",
        # the sweeper republishes a message the broker lost after 5 s (default 60 s)
        "IGSEND_LOST_AFTER": "5",
        **extra,
    }


@pytest.fixture(scope="session")
def worker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "worker.log"


@pytest.fixture(scope="session")
def worker_metrics_port() -> int:
    from igsend.local.embedded_redis import free_port

    return free_port()


@pytest.fixture(scope="session")
def worker(redis_url: str, sandbox: str, accounts_file: Path, worker_log: Path,
           worker_metrics_port: int) -> Iterator[object]:
    from igsend.local.processes import start_worker

    env = worker_env(redis_url, sandbox, accounts_file, IGSEND_METRICS_PORT=str(worker_metrics_port))
    service = start_worker(env=env, log_path=worker_log, concurrency=16)
    yield service
    service.stop()


@pytest.fixture
def r(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def private_db(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A Redis database no worker consumes (db 1), made the process's IGSEND_REDIS_URL for the test: for tests
    that look at the queue itself, so the session's worker cannot take a message away under them."""
    url = redis_url.rsplit("/", 1)[0] + "/1"
    os.environ["IGSEND_REDIS_URL"] = url
    reset_client_caches()
    client = redis_lib.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    os.environ["IGSEND_REDIS_URL"] = redis_url
    reset_client_caches()


@pytest.fixture
def clean(r: redis_lib.Redis, sandbox: str) -> Iterator[None]:
    """Each integration test starts with an empty sandbox (Meta's budgets per login kind: rate_limit None) and
    no igsend state (Celery's keys are left)."""
    _wipe(r)
    requests.delete(f"{sandbox}/_sandbox/messages", timeout=5).raise_for_status()
    requests.delete(f"{sandbox}/_sandbox/faults", timeout=5)
    requests.post(f"{sandbox}/_sandbox/config", json={"latency_ms": 0, "error_rate": 0, "rate_limit": None,
                                                      "media_rate_limit": None}, timeout=5).raise_for_status()
    yield
    _wipe(r)


def _wipe(r: redis_lib.Redis) -> None:
    keys = list(r.scan_iter("igsend:*", count=1000))
    # the running workers' heartbeats and accounts (igsend.core.presence) and their accounts' budgets
    # (igsend.core.lanes) stay: they describe the session's worker
    keys = [k for k in keys if k not in ("igsend:scheduler:leader", "igsend:lanes:rate")
            and not k.startswith("igsend:workers")]
    if keys:
        r.delete(*keys)


def queue_depth(r: redis_lib.Redis) -> int:
    """Messages waiting to be sent: on the igsend queue, across kombu's priority lists (a chunk counts its jobs:
    igsend.core.chunks), and in the accounts' lanes (igsend.core.lanes)."""
    import json

    from igsend.core.celery_app import queue_keys
    from igsend.core.chunks import job_ids_in
    from igsend.core.lanes import waiting_total

    def jobs(raw: str) -> int:
        try:
            return max(1, len(job_ids_in(json.loads(raw))))
        except ValueError:  # not kombu's envelope: one message all the same
            return 1

    return sum(jobs(raw) for key in queue_keys() for raw in r.lrange(key, 0, -1)) + waiting_total(r)


def received(sandbox: str, **params: str) -> list[dict]:
    """What the sandbox accepted, oldest first."""
    response = requests.get(f"{sandbox}/_sandbox/messages", params=params, timeout=5)
    response.raise_for_status()
    return response.json()["messages"]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
