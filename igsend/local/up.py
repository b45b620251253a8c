"""``igsend up``: the compose stack as local processes in the foreground, until Ctrl-C.

Redis (embedded when none answers), the worker, Flower, the HTTP API and the metrics exporter; and the
sandbox in place of Meta when no account token is configured. Missing credentials for Flower and the API
are generated for this run and printed once.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from pathlib import Path

from rich.console import Console


def run_up(*, api_port: int = 8000, flower_port: int = 5555, metrics_port: int = 9808,
           sandbox_port: int = 8899, stop_event: threading.Event | None = None) -> int:
    from igsend.core.settings import get_settings
    from igsend.local.embedded_redis import ensure_redis
    from igsend.local.processes import start_command, start_sandbox, start_worker
    from workers.accounts import AccountError, load_accounts

    console = Console()
    settings = get_settings()
    try:
        # Before anything starts: a bad accounts file would make the worker exit, and `up` shut down.
        accounts = load_accounts()
    except AccountError as exc:
        console.print(f"[red]igsend up: {exc}[/]", markup=True, highlight=False)
        return 78  # EX_CONFIG, as `igsend worker` exits
    data_dir = Path(settings.data_dir)
    stop = stop_event or threading.Event()
    if stop_event is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    redis = ensure_redis(settings.redis_url, data_dir / "redis")
    env = {"IGSEND_REDIS_URL": redis.url}
    services = []
    try:
        line = "started, AOF in " + str(redis.data_dir) if redis.process else "already running"
        console.print(f"[bold]redis  [/]  {redis.url}  ({line})")
        if not accounts:
            token = "IGSANDBOX" + secrets.token_urlsafe(24)
            sandbox = start_sandbox(tokens=[token], port=sandbox_port, latency_ms=50,
                                    log_path=data_dir / "up-sandbox.log")
            services.append(sandbox)
            env.update({"IGSEND_ACCESS_TOKEN": token, "IGSEND_GRAPH_URL": sandbox.url, "IGSEND_ACCOUNT_ID": "me"})
            console.print(f"[bold]sandbox[/]  {sandbox.url}  (no account token configured: sending to the sandbox)")
        worker = start_worker(env=env, log_path=data_dir / "up-worker.log",
                              processes=int(os.environ.get("IGSEND_PROCESSES") or 1))
        services.append(worker)
        console.print(f"[bold]worker [/]  pid {worker.process.pid}  (log {worker.log_path})")
        flower_auth = os.environ.get("IGSEND_FLOWER_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
        flower = start_command("flower", ["flower", "--port", str(flower_port)],
                               env={**env, "IGSEND_FLOWER_AUTH": flower_auth},
                               ready_url=f"http://127.0.0.1:{flower_port}/healthcheck",
                               log_path=data_dir / "up-flower.log")
        services.append(flower)
        console.print(f"[bold]flower [/]  http://127.0.0.1:{flower_port}  (login {flower_auth})")
        api_keys = os.environ.get("IGSEND_API_KEYS") or secrets.token_urlsafe(18)
        api = start_command("api", ["api", "--port", str(api_port)], env={**env, "IGSEND_API_KEYS": api_keys},
                            ready_url=f"http://127.0.0.1:{api_port}/openapi.json", log_path=data_dir / "up-api.log")
        services.append(api)
        key = api_keys.split(",")[0]
        console.print(f"[bold]api    [/]  http://127.0.0.1:{api_port}  (Authorization: Bearer {key})")
        metrics = start_command("metrics", ["metrics", "--port", str(metrics_port)], env=env,
                                ready_url=f"http://127.0.0.1:{metrics_port}/metrics",
                                log_path=data_dir / "up-metrics.log")
        services.append(metrics)
        console.print(f"[bold]metrics[/]  http://127.0.0.1:{metrics_port}/metrics")
        for warning in _redis_warnings(redis.url):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        console.print("igsend is up; Ctrl-C stops everything")
        while not stop.wait(1.0):
            dead = [s.name for s in services if not s.alive()]
            if dead:
                console.print(f"[red]{', '.join(dead)} stopped; shutting down[/]")
                return 1
        return 0
    except RuntimeError as exc:  # a service did not start: say which and why, then stop the others
        console.print(f"[red]igsend up: {exc}[/]", highlight=False)
        for line in _tail(exc):
            console.print(f"  {line}", markup=False, highlight=False)
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        redis.stop()
        console.print("stopped")


def _tail(exc: RuntimeError, lines: int = 5) -> list[str]:
    """The last lines of the log a start error names ("(log: PATH)"): usually the reason itself."""
    text = str(exc)
    if "(log: " not in text:
        return []
    path = Path(text.rsplit("(log: ", 1)[1].rstrip(")"))
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _redis_warnings(url: str) -> list[str]:
    from igsend.core.store import get_redis, redis_warnings

    return redis_warnings(get_redis(url))
