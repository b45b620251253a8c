"""``igsend worker``: Celery workers on the igsend queue with defaults fit for network-bound sends.

Sending is waiting on the network, so each worker process uses Celery's ``threads`` pool with many POSTs in
flight. One Python process is GIL-bound well below what the network allows, so by default one worker
process runs per CPU core; this parent only starts them, passes on signals and restarts one that dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

#: POSTs in flight per worker process (threads pool).
DEFAULT_CONCURRENCY = 64


def default_processes() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_worker(*, concurrency: int | None = None, processes: int | None = None, loglevel: str = "INFO",
               extra: list[str] | None = None, name: str | None = None) -> None:
    concurrency = concurrency or int(os.environ.get("IGSEND_CONCURRENCY") or DEFAULT_CONCURRENCY)
    processes = processes or int(os.environ.get("IGSEND_PROCESSES") or default_processes())
    name = name or f"igsend-{os.getpid()}"
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
    app.worker_main(argv)


def _die_with_parent() -> None:
    # A child worker must not outlive this parent (e.g. when the parent is SIGKILLed): Linux PDEATHSIG.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _supervise(processes: int, concurrency: int, loglevel: str, extra: list[str], name: str) -> int:
    def spawn(index: int) -> subprocess.Popen:
        argv = [sys.executable, "-m", "producers.cli", "worker", "--processes", "1", "--concurrency",
                str(concurrency), "--loglevel", loglevel, "--name", f"{name}-{index}", "--", *extra]
        env = dict(os.environ)
        if env.get("IGSEND_METRICS_PORT"):  # one metrics endpoint per process: base port + index
            env["IGSEND_METRICS_PORT"] = str(int(env["IGSEND_METRICS_PORT"]) + index)
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, env=env)

    children = {index: spawn(index) for index in range(processes)}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, child in list(children.items()):
            if child.poll() is not None and not stopping:
                print(f"igsend worker: child {index} exited with {child.returncode}; restarting", file=sys.stderr)
                time.sleep(1)
                children[index] = spawn(index)
        time.sleep(0.5)
    for child in children.values():
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
