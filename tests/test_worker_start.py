"""A worker that cannot work does not start: one clear line and EX_CONFIG, in `igsend worker` and `igsend up`;
and the multi-process supervisor gives up on a child that keeps failing at start instead of looping."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from igsend.local.embedded_redis import free_port, redis_answers, start_redis

IGSEND = [sys.executable, "-m", "igsend.cli"]
TOKEN = "IGQstarttoken" + "z" * 40


def run(*args: str, env: dict[str, str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``igsend ARGS``; ``timeout`` only guards against a hang (how fast it stops is not a test's business)."""
    return subprocess.run([*IGSEND, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "IGSEND_LOG_FORMAT": "text", **env}, **kwargs)


@pytest.fixture
def closed_redis() -> dict[str, str]:
    return {"IGSEND_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


@pytest.mark.parametrize("processes", ["1", "2"])
def test_bad_accounts_file_stops_the_worker_at_once(tmp_path: Path, closed_redis: dict[str, str],
                                                    processes: str) -> None:
    bad = tmp_path / "accounts.toml"
    bad.write_text(f'[accounts.shop]\nid = "1"\ntoken = "{TOKEN}"\nlogin = "myspace"\n')
    done = run("worker", "--processes", processes,
                     env={**closed_redis, "IGSEND_ACCOUNTS_FILE": str(bad), "IGSEND_ACCESS_TOKEN": ""})
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith("igsend worker: ") and str(bad) in done.stderr and "login" in done.stderr
    assert TOKEN not in done.stderr + done.stdout


@pytest.mark.scenario
def test_missing_or_invalid_file_names_the_file(tmp_path: Path, closed_redis: dict[str, str]) -> None:
    missing = tmp_path / "nowhere.toml"
    done = run("worker", "--processes", "1", env={**closed_redis, "IGSEND_ACCOUNTS_FILE": str(missing)})
    assert done.returncode == 78 and str(missing) in done.stderr and "Traceback" not in done.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[accounts.shop\n")
    done = run("worker", "--processes", "1", env={**closed_redis, "IGSEND_ACCOUNTS_FILE": str(broken)})
    assert done.returncode == 78 and str(broken) in done.stderr and "Traceback" not in done.stderr


def test_worker_without_any_account_refuses_to_start(tmp_path: Path, closed_redis: dict[str, str]) -> None:
    done = run("worker", env={**closed_redis, "IGSEND_ACCESS_TOKEN": "", "IGSEND_ACCOUNTS_FILE": ""},
                     cwd=tmp_path)
    assert done.returncode == 78
    assert done.stderr.strip() == ("igsend worker: no account has a token: set IGSEND_ACCESS_TOKEN or "
                                   "IGSEND_ACCOUNTS_FILE")


def test_worker_with_a_wrong_redis_password_refuses_to_start(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", password="right-password")
    try:
        port = server.url.rsplit(":", 1)[1].split("/")[0]
        done = run("worker", "--processes", "1",
                         env={"IGSEND_REDIS_URL": f"redis://:wrong-password@127.0.0.1:{port}/0",
                              "IGSEND_ACCESS_TOKEN": TOKEN, "IGSEND_ACCOUNTS_FILE": ""})
    finally:
        server.stop()
    assert done.returncode == 78
    assert done.stderr.startswith(f"igsend worker: cannot reach Redis at redis://127.0.0.1:{port}/0: authentication")
    assert "wrong-password" not in done.stderr


def test_up_shows_the_accounts_error_and_stops(tmp_path: Path) -> None:
    bad = tmp_path / "accounts.toml"
    bad.write_text("not toml at all = = =\n")
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run("up", env={"IGSEND_REDIS_URL": url, "IGSEND_ACCOUNTS_FILE": str(bad)}, cwd=tmp_path)
    assert done.returncode == 78, done.stdout + done.stderr
    assert f"igsend up: IGSEND_ACCOUNTS_FILE: {bad}" in " ".join(done.stdout.split())
    assert not redis_answers(url)  # nothing was started


SUPERVISED = textwrap.dedent("""
    import subprocess, sys
    from workers.run import supervise

    def spawn(index):
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])

    sys.exit(supervise(spawn, 2, backoff=0.1))
""")


def test_supervisor_gives_up_on_a_child_that_always_fails() -> None:
    done = subprocess.run([sys.executable, "-c", SUPERVISED], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IGSEND_LOG_FORMAT": "text"})
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "restarting in 0.1 s" in lines[0]
    delays = [line.rsplit("restarting in ", 1)[1] for line in lines if "child 0 " in line and "restarting" in line]
    assert delays == ["0.1 s", "0.2 s", "0.4 s", "0.8 s"]  # backing off, not hammering
    assert lines[-1].endswith("exited with 3 (5 failures, each within 60 s of its start); giving up")
