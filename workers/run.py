"""``igsend worker``: Celery workers on the igsend queue with defaults fit for network-bound sends.

Sending is waiting on the network, so each worker process uses Celery's ``threads`` pool with many POSTs in
flight. One Python process is GIL-bound well below what the network allows, so by default one worker
process runs per CPU core; this parent only starts them, passes on signals and restarts one that dies.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

#: POSTs in flight per worker process (threads pool).
DEFAULT_CONCURRENCY = 64


def default_processes() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: sysexits.h EX_CONFIG: the configuration is wrong; restarting will not help until someone fixes it.
EX_CONFIG = 78


def say(message: str) -> None:
    """One line on stderr from the worker's own code, in the worker's log format."""
    if (os.environ.get("IGSEND_LOG_FORMAT") or "text") == "json":
        message = json.dumps({"ts": round(time.time(), 3), "level": "ERROR", "logger": "igsend.worker",
                              "message": message})
    else:
        message = f"igsend worker: {message}"
    print(message, file=sys.stderr, flush=True)


def config_problem() -> str | None:
    """Why this worker cannot work, in one line naming the file, account or setting; None when it can.

    Checked before Celery starts: a worker with no usable account would take messages off the queue only
    to dead-letter them, and a supervisor would restart it forever."""
    import redis

    from igsend.core import callbacks
    from igsend.core.errors import ConfigurationError
    from igsend.core.settings import get_settings
    from igsend.core.store import certificate_refused, describe_redis_error, get_redis
    from workers.accounts import AccountError, load_accounts
    from workers.tokens import TokenPolicy

    try:
        get_settings()
        TokenPolicy.from_env()
    except ConfigurationError as exc:
        return str(exc)
    try:
        accounts = load_accounts()
    except AccountError as exc:
        return str(exc)
    if not accounts:
        return "no account has a token: set IGSEND_ACCESS_TOKEN or IGSEND_ACCOUNTS_FILE"
    try:
        callbacks.load()
    except callbacks.CallbacksFileError as exc:
        return str(exc)
    try:
        get_redis(patient=False).ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        return describe_redis_error(exc)
    except redis.RedisError as exc:
        if certificate_refused(exc):  # waiting would not help: the certificate will not verify next time either
            return describe_redis_error(exc)
        # otherwise Redis is down or restarting: Celery waits for it, as a worker should
    return None


def run_worker(*, concurrency: int | None = None, processes: int | None = None, loglevel: str = "INFO",
               extra: list[str] | None = None, name: str | None = None) -> None:
    concurrency = concurrency or int(os.environ.get("IGSEND_CONCURRENCY") or DEFAULT_CONCURRENCY)
    processes = processes or int(os.environ.get("IGSEND_PROCESSES") or default_processes())
    name = name or f"igsend-{os.getpid()}"
    problem = config_problem()
    if problem:
        say(problem)
        sys.exit(EX_CONFIG)
    if processes == 1:
        _run_one(concurrency, loglevel, extra or [], f"{name}-0")
    else:
        sys.exit(_supervise(processes, concurrency, loglevel, extra or [], name))


def _run_one(concurrency: int, loglevel: str, extra: list[str], hostname: str) -> None:
    from workers.app import app
    from workers.logs import configure_logging

    configure_logging()
    app.conf.worker_concurrency = concurrency  # also sizes the Graph client's connection pool
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
            "--queues", "igsend", "--hostname", f"{hostname}@%h", "--without-mingle", "--without-gossip", *extra]
    if (os.environ.get("IGSEND_LOG_FORMAT") or "text") == "json":
        argv.insert(0, "--quiet")  # the startup banner is printed, not logged: it cannot be one JSON object
    app.worker_main(argv)


def _die_with_parent() -> None:
    # A child worker must not outlive this parent (e.g. when the parent is SIGKILLed): Linux PDEATHSIG.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _supervise(processes: int, concurrency: int, loglevel: str, extra: list[str], name: str) -> int:
    def spawn(index: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "workers", "--concurrency", str(concurrency), "--loglevel", loglevel,
                "--name", f"{name}-{index}", "--", *extra]
        env = dict(os.environ)
        if env.get("IGSEND_METRICS_PORT"):  # one metrics endpoint per process: base port + index
            env["IGSEND_METRICS_PORT"] = str(int(env["IGSEND_METRICS_PORT"]) + index)
        if env.get("IGSEND_LIVENESS_FILE"):  # one liveness file per process; the probe wants each fresh
            env["IGSEND_LIVENESS_FILE"] = f"{env['IGSEND_LIVENESS_FILE']}.{index}"
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, env=env)

    return supervise(spawn, processes)


def supervise(spawn: Callable[[int], subprocess.Popen[bytes]], processes: int, *, backoff: float = 1.0,
              max_quick_failures: int = 5, quick: float = 60.0) -> int:
    """Run ``processes`` children made by ``spawn(index)``, restart one that exits, pass on SIGTERM/SIGINT.

    A child that exits within ``quick`` seconds of its start is failing at start, not crashing after work:
    it is restarted after 1 s, 2 s, 4 s... (``backoff`` doubled, at most 60 s), and after
    ``max_quick_failures`` such exits in a row, or at once when it exits with EX_CONFIG, the supervisor
    stops the others and gives up with a non-zero status instead of looping forever.
    """
    started: dict[int, float] = {}
    children: dict[int, subprocess.Popen[bytes] | None] = {}
    restart_at: dict[int, float] = {}
    failures: dict[int, int] = dict.fromkeys(range(processes), 0)
    for index in range(processes):
        children[index], started[index] = spawn(index), time.monotonic()
    stopping = False
    outcome = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        now = time.monotonic()
        for index, child in list(children.items()):
            if child is None:
                if now >= restart_at[index]:
                    children[index], started[index] = spawn(index), time.monotonic()
                continue
            code = child.poll()
            if code is None or stopping:
                continue
            ran = now - started[index]
            failures[index] = failures[index] + 1 if ran < quick else 1
            if code == EX_CONFIG or failures[index] >= max_quick_failures:
                why = "a configuration error" if code == EX_CONFIG else (
                    f"{failures[index]} failures, each within {quick:.0f} s of its start")
                say(f"child {index} exited with {code} ({why}); giving up")
                outcome = EX_CONFIG if code == EX_CONFIG else 1
                stop(signal.SIGTERM, None)
                break
            delay = min(60.0, backoff * 2 ** (failures[index] - 1)) if ran < quick else backoff
            say(f"child {index} exited with {code} after {ran:.1f} s; restarting in {delay:g} s")
            children[index], restart_at[index] = None, now + delay
        time.sleep(0.05 if backoff < 1 else 0.5)
    for child in children.values():
        if child is None:
            continue
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
    return outcome
