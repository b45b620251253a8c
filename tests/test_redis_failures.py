"""A misconfigured or unreachable Redis: every CLI verb says so in one line after at most one retry, never with a
traceback or the password; and Redis settings that put queued messages at risk are reported. How fast a verb
gives up is counted in connections, not timed: a busy machine stretches seconds, never the count."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis as redis_lib

from igsend.local.embedded_redis import EmbeddedRedis, free_port, start_redis
from tests.listeners import CountingListener

IGSEND = [sys.executable, "-m", "igsend.cli"]
PASSWORD = "s3cret-redis-password"
VERBS = [["status", "some-job"], ["send", "text", "someone", "hi"], ["dlq", "list"], ["accounts", "list"],
         ["dlq", "replay", "--all"]]


def igsend(*args: str, url: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``igsend ARGS`` against ``url``; ``timeout`` only guards against a hang."""
    return subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "IGSEND_REDIS_URL": url})


def connections_received(server: EmbeddedRedis) -> int:
    return int(redis_lib.Redis.from_url(server.url).info("stats")["total_connections_received"])


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("locked-redis"), password=PASSWORD)
    yield server
    server.stop()


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v[:2]))
@pytest.mark.parametrize("credentials", ["", ":wrong-password@"], ids=["no-password", "wrong-password"])
def test_redis_that_refuses_the_password_fails_at_once(locked_redis: EmbeddedRedis, verb: list[str],
                                                       credentials: str) -> None:
    port = locked_redis.url.rsplit(":", 1)[1].split("/")[0]
    url = f"redis://{credentials}127.0.0.1:{port}/0"
    before = connections_received(locked_redis)
    run = igsend(*verb, url=url)
    assert run.returncode == 1, run.stderr
    # a refused password is final: one connection (the retrying client made 81 and took 91 s); +1 is our count
    assert connections_received(locked_redis) - before <= 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"error: cannot reach Redis at redis://127.0.0.1:{port}/0: authentication failed")
    assert "wrong-password" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v[:2]))
def test_unreachable_redis_fails_after_one_retry(verb: list[str]) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/2"
    run = igsend(*verb, url=url)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"error: cannot reach Redis at {url.replace(f':{PASSWORD}@', '')}: ")
    assert PASSWORD not in run.stderr


def test_clients_never_retry_an_authentication_error(locked_redis: EmbeddedRedis) -> None:
    """The patient policy (workers, long-running producers) still gives up on a wrong password at once."""
    from igsend.core.store import get_redis

    port = locked_redis.url.rsplit(":", 1)[1].split("/")[0]
    client = get_redis(f"redis://:nope@127.0.0.1:{port}/0", patient=True)
    before = connections_received(locked_redis)
    with pytest.raises(redis_lib.AuthenticationError):
        client.ping()
    assert connections_received(locked_redis) - before == 1 + 1  # its one attempt, and our own count's


def test_a_peer_that_never_answers_fails_after_one_timeout() -> None:
    """Something listens but never speaks Redis (a wrong port, a hung server): one timeout, never retried (a
    timeout already waited), where the patient policy would open a connection per retry."""
    with CountingListener(close_at_once=False) as silent:
        run = igsend("status", "some-job", url=silent.url)
    assert run.returncode == 1 and silent.connections == 1
    assert run.stderr.startswith(f"error: cannot reach Redis at {silent.url}: ") and "Traceback" not in run.stderr
