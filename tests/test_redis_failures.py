"""A misconfigured or unreachable Redis: every CLI verb says so in one line within seconds, never with a
traceback or the password; and Redis settings that put queued messages at risk are reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from igsend.local.embedded_redis import EmbeddedRedis, free_port, start_redis

IGSEND = [sys.executable, "-m", "igsend.cli"]
PASSWORD = "s3cret-redis-password"
VERBS = [["status", "some-job"], ["send", "text", "someone", "hi"], ["dlq", "list"], ["accounts", "list"],
         ["dlq", "replay", "--all"]]


def timed(*args: str, url: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    run = subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "IGSEND_REDIS_URL": url})
    return run, time.monotonic() - started


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
    run, took = timed(*verb, url=url)
    assert run.returncode == 1, run.stderr
    # generous for a loaded CI machine; the retrying client took 91 s here
    assert took < 15, f"took {took:.1f} s"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"error: cannot reach Redis at redis://127.0.0.1:{port}/0: authentication failed")
    assert "wrong-password" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v[:2]))
def test_unreachable_redis_fails_within_seconds(verb: list[str]) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/2"
    run, took = timed(*verb, url=url)
    assert run.returncode == 1
    assert took < 6, f"took {took:.1f} s"  # the retrying client took 9 s; a process start is ~0.3 s
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"error: cannot reach Redis at {url.replace(f':{PASSWORD}@', '')}: ")
    assert PASSWORD not in run.stderr


def test_clients_never_retry_an_authentication_error(locked_redis: EmbeddedRedis) -> None:
    """The patient policy (workers, long-running producers) still gives up on a wrong password at once."""
    from igsend.core.store import get_redis

    port = locked_redis.url.rsplit(":", 1)[1].split("/")[0]
    client = get_redis(f"redis://:nope@127.0.0.1:{port}/0", patient=True)
    started = time.monotonic()
    with pytest.raises(redis_lib.AuthenticationError):
        client.ping()
    assert time.monotonic() - started < 1


def test_a_peer_that_never_answers_fails_after_one_timeout() -> None:
    """Something listens but never speaks Redis (a wrong port, a hung server): one 5 s timeout, not 4 x 10 s."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; nobody ever reads or writes
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        run, took = timed("status", "some-job", url=url)
    # One 5 s timeout, however slow the machine, is well under the 40 s four patient retries would take
    assert run.returncode == 1 and took < 20, f"took {took:.1f} s"
    assert run.stderr.startswith(f"error: cannot reach Redis at {url}: ") and "Traceback" not in run.stderr
