"""`ops/bench waiters`: how many ``GET /v1/messages/{id}?wait=30`` one API process holds at once, and what they cost.

One real API process (gunicorn, one worker process, gthread) on a Redis of its own with no igsend worker, so every
job stays queued: N requests wait at once on N jobs; meanwhile Redis's connections and commands, the process's
RSS and threads, and a plain GET's answer time are read; then every job is cancelled and each request's answer
time after its job's cancel is measured (the wakeup by the outcome stream). One request past the process's
waiting slots is answered 503 at once.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from igsend.core.store import forget_connections
from igsend.local.embedded_redis import free_port, start_redis

KEY = "bench-waiters-key"
HOLD_SECONDS = 3.0  # how long the waiters are held while the meters read


def _get(port: int, path: str, timeout: float = 60) -> tuple[int, dict, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
        answer = connection.getresponse()
        body = json.loads(answer.read() or b"{}")
        return answer.status, body, time.monotonic()
    finally:
        connection.close()


def _api(port: int, redis_url: str, threads: int, waiting: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "IGSEND_REDIS_URL": redis_url, "IGSEND_API_KEYS": KEY}
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads",
               str(threads), "--worker-connections", str(threads + 100), "--timeout", "120",
               f"producers.api:create_app(max_waiting={waiting})"]
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get(port, "/openapi.json", timeout=2)[0] == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the API did not start; see {log}")


def _worker_pid(master: int) -> int:
    import psutil

    children = psutil.Process(master).children()
    return children[0].pid if children else master


def _round(redis_url: str, tmp: Path, waiters: int) -> dict[str, float | int]:
    import psutil

    import producers

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    jobs = [job for job in producers.send_many(
        [{"kind": "text", "recipient": f"w{i}", "text": "held"} for i in range(waiters + 1)]).jobs if job]
    threads = waiters + 8
    port = free_port()
    api = _api(port, redis_url, threads, waiters, tmp / f"api-{waiters}.log")
    try:
        process = psutil.Process(_worker_pid(api.pid))
        _get(port, f"/v1/messages/{jobs[0].id}")  # warm: the app's first request
        rss_idle, threads_idle = process.memory_info().rss, process.num_threads()
        clients_idle = int(client.info("clients")["connected_clients"])
        exists_before = int(client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0))
        pool = ThreadPoolExecutor(waiters)
        answers = [pool.submit(_get, port, f"/v1/messages/{job.id}?wait=30") for job in jobs[:waiters]]
        # every waiter has read its job's status once (get_job's EXISTS, then the status's HGET+EXISTS)
        deadline = time.monotonic() + 120
        while int(client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0)) - exists_before < 2 * waiters:
            if time.monotonic() > deadline:
                raise RuntimeError("the waiters did not all start")
            time.sleep(0.05)
        started = time.monotonic()
        plain = _get(port, f"/v1/messages/{jobs[-1].id}")  # served while every waiting slot is taken
        plain_ms = (time.monotonic() - started) * 1000
        over = _get(port, f"/v1/messages/{jobs[-1].id}?wait=30")  # one past the slots
        before = client.info("commandstats")
        time.sleep(HOLD_SECONDS)
        after = client.info("commandstats")
        clients_held = int(client.info("clients")["connected_clients"])
        rss_held, threads_held = process.memory_info().rss, process.num_threads()
        held_commands = sum(v["calls"] - before.get(k, {"calls": 0})["calls"] for k, v in after.items()
                            if k != "cmdstat_info")
        cancelled: dict[str, float] = {}
        for job in jobs[:waiters]:
            job.cancel()
            cancelled[job.id] = time.monotonic()
        wakes, statuses = [], set()
        for job, future in zip(jobs[:waiters], answers, strict=True):
            status, body, at = future.result(timeout=120)
            statuses.add((status, body.get("status") if status == 200 else body.get("message")))
            wakes.append((at - cancelled[job.id]) * 1000)
        pool.shutdown()
    finally:
        api.terminate()
        api.wait(timeout=30)
    return {
        "waiters": waiters, "threads": threads,
        "all_answered": int(statuses == {(200, "cancelled")}), "answers": sorted(map(str, statuses)),
        "past_slots_503": int(over[0] == 503), "plain_get_status": plain[0],
        "plain_get_ms": round(plain_ms, 1),
        "redis_connections_added": clients_held - clients_idle,
        "redis_commands_in_hold": held_commands, "hold_s": HOLD_SECONDS,
        "rss_added_mb": round((rss_held - rss_idle) / 1e6, 1),
        "threads_added": threads_held - threads_idle,
        "wake_p50_ms": round(statistics.median(wakes), 1),
        "wake_max_ms": round(max(wakes), 1),
    }


def bench_waiters(small: bool) -> int:
    counts = [24, 100] if small else [24, 250, 1000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            os.environ["IGSEND_REDIS_URL"] = server.url
            forget_connections()
            for waiters in counts:
                rows.append(_round(server.url, Path(tmp), waiters))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    print(f"\n{'waiters':>8} {'threads':>8} {'redis conns':>12} {'cmds in hold':>13} {'RSS +MB':>8} "
          f"{'plain GET ms':>13} {'wake p50 ms':>12} {'wake max ms':>12} {'503 past':>9}")
    for row in rows:
        print(f"{row['waiters']:>8} {row['threads']:>8} {row['redis_connections_added']:>12} "
              f"{row['redis_commands_in_hold']:>13} {row['rss_added_mb']:>8} {row['plain_get_ms']:>13} "
              f"{row['wake_p50_ms']:>12} {row['wake_max_ms']:>12} {'yes' if row['past_slots_503'] else 'NO':>9}")
    ok = all(row["all_answered"] and row["past_slots_503"] and row["plain_get_status"] == 200 for row in rows)
    return 0 if ok else 1
