"""Starting and stopping igsend's own processes (sandbox, worker) for the demo, ``igsend up``, tests and
the ops scripts, so each of them starts things one way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str = ""
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a warm shutdown for Celery), then SIGKILL if it lingers."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()


def _open_log(log_path: Path | None) -> int | IO[bytes]:
    if log_path is None:
        return subprocess.DEVNULL
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it


def start_sandbox(*, tokens: list[str], port: int | None = None, latency_ms: float = 0, error_rate: float = 0,
                  rate_limit: float | None = None, media_rate_limit: float | None = None,
                  log_path: Path | None = None, extra: list[str] | None = None, wait: float = 20.0) -> Service:
    # No port given: the sandbox binds port 0 and says which port it got, so no other process can take a port
    # between our choosing it and the sandbox binding it.
    args = [sys.executable, "-m", "sandbox", "--port", str(port or 0), "--latency-ms", str(latency_ms),
            "--error-rate", str(error_rate)]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    if media_rate_limit is not None:
        args += ["--media-rate-limit", str(media_rate_limit)]
    args += extra or []
    env = {**os.environ, "IGSEND_SANDBOX_TOKENS": ",".join(tokens), "PYTHONUNBUFFERED": "1"}
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="igsend-sandbox-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0  # the log may hold an earlier run's lines
    log = _open_log(log_path)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    service = Service("sandbox", process, f"http://127.0.0.1:{port}" if port else "", log_path)
    if not port:
        service.url = f"http://127.0.0.1:{_announced_port(service, log_path, offset, wait)}"
    return _wait_ready(service, f"{service.url}/healthz", wait)


def _announced_port(service: Service, log_path: Path, offset: int, wait: float) -> int:
    """The port a child bound to port 0 reports in its log ("... listening on http://HOST:PORT")."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with open(log_path, "rb") as log:
            log.seek(offset)
            found = re.search(rb"listening on http://[^:\s]+:(\d+)", log.read())
        if found:
            return int(found.group(1))
        if not service.alive():
            raise RuntimeError(f"{service.name} exited with {service.process.returncode} (log: {log_path})")
        time.sleep(0.02)
    service.kill()
    raise RuntimeError(f"{service.name} did not say which port it listens on within {wait:.0f} s (log: {log_path})")


def _wait_ready(service: Service, ready_url: str, wait: float, auth: tuple[str, str] | None = None) -> Service:
    """Return the service once ``ready_url`` answers (any status below 500); kill it if it never does."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited with {service.process.returncode} (log: {service.log_path})")
        try:
            if requests.get(ready_url, timeout=0.5, auth=auth).status_code < 500:
                return service
        except requests.RequestException:
            pass
        time.sleep(0.05)
    service.kill()
    raise RuntimeError(f"{service.name} did not answer on {ready_url} within {wait:.0f} s (log: {service.log_path})")


def start_worker(*, env: dict[str, str], log_path: Path | None = None, concurrency: int | None = None,
                 processes: int = 1, extra: list[str] | None = None, wait: float = 60.0) -> Service:
    """Run ``igsend worker`` in a child process with ``env`` added; return once every worker process answers
    a ping."""
    args = [sys.executable, "-m", "igsend.cli", "worker", "--loglevel", "INFO", "--processes", str(processes)]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    args += extra or []
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = _open_log(log_path)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                               start_new_session=True)
    service = Service("worker", process, log_path=log_path, env=env)
    wait_for_worker(service, env.get("IGSEND_REDIS_URL"), wait, processes)
    return service


def wait_for_worker(service: Service, redis_url: str | None, wait: float, processes: int = 1) -> None:
    from celery import Celery

    from igsend.core.celery_app import celery_config
    from igsend.core.settings import Settings

    probe = Celery("igsend-probe")
    probe.conf.update(celery_config(Settings(redis_url=redis_url or Settings.redis_url)))
    prefix = f"igsend-{service.process.pid}-"
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"the worker exited with {service.process.returncode} (log: {service.log_path})")
            try:
                replies = probe.control.ping(timeout=0.5) or []
            except Exception:  # Redis restarting or the connection went stale: ask again
                replies = []
                time.sleep(0.2)
            if sum(name.startswith(prefix) for reply in replies for name in reply) >= processes:
                return
        service.kill()
        raise RuntimeError(f"the worker did not come up within {wait:.0f} s (log: {service.log_path})")
    finally:
        probe.close()


def start_command(name: str, args: list[str], *, env: dict[str, str], ready_url: str, log_path: Path | None = None,
                  wait: float = 30.0, auth: tuple[str, str] | None = None) -> Service:
    """Run an ``igsend`` subcommand (``args`` after ``igsend``) and wait until ``ready_url`` answers."""
    log = _open_log(log_path)
    process = subprocess.Popen([sys.executable, "-m", "igsend.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    return _wait_ready(Service(name, process, ready_url, log_path, env), ready_url, wait, auth)
