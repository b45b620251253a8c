"""What the benchmarks share: a private stack and igsend workers, meters, one igsend run, the table rows."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from igsend.core.store import forget_connections
from igsend.local.embedded_redis import start_redis
from igsend.local.processes import Service, start_sandbox, start_worker

#: The sandbox's latency for the throughput, sizing and pod runs.
LATENCY_MS = 100


def igsend_env(redis_url: str, sandbox_url: str, accounts_file: Path, extra: dict[str, str] | None = None
               ) -> dict[str, str]:
    """The environment an igsend worker of a benchmark stack runs with."""
    return {"IGSEND_REDIS_URL": redis_url, "IGSEND_GRAPH_URL": sandbox_url, "IGSEND_ACCOUNTS_FILE": str(accounts_file),
            "IGSEND_ACCESS_TOKEN": "", **(extra or {})}


@contextlib.contextmanager
def stack(tmp: Path, *, accounts: int, budget: float | None, workers: int, latency_ms: float,
          concurrency: int | None, worker_env: dict[str, str] | None = None, logins: list[str] | None = None):
    """Redis + sandbox + ``workers`` worker processes. ``budget``: text/s per account on both sides; None means
    Meta's real budget for each account's login kind (``logins``, default all Instagram Login), which the
    sandbox reads from the token's prefix (IG... Instagram Login, EAA... Facebook Login)."""
    redis = start_redis(tmp / "redis")
    services: list[Service] = []
    logins = logins or ["instagram"] * accounts
    prefix = {"instagram": "IGQbench", "facebook": "EAAbench"}
    tokens = [f"{prefix[logins[i]]}{i}x{os.urandom(12).hex()}" for i in range(accounts)]
    try:
        sandbox = start_sandbox(tokens=tokens, latency_ms=latency_ms, rate_limit=budget,
                                media_rate_limit=max(1.0, budget / 30) if budget else None,
                                log_path=tmp / "sandbox.log")
        services.append(sandbox)
        accounts_file = tmp / "accounts.toml"
        limits = f"text_per_second = {budget}\n" if budget else ""
        accounts_file.write_text("".join(
            f'[accounts.acct{i}]\nid = "1784140000000{i:04d}"\ntoken = "{token}"\nlogin = "{logins[i]}"\n'
            + (f"[accounts.acct{i}.limits]\n{limits}" if limits else "") + "\n" for i, token in enumerate(tokens)))
        env = igsend_env(redis.url, sandbox.url, accounts_file, worker_env)
        for index in range(workers):
            services.append(start_worker(env=env, log_path=tmp / f"worker{index}.log", concurrency=concurrency))
        os.environ["IGSEND_REDIS_URL"] = redis.url
        forget_connections()  # each stack has its own Redis
        yield redis.url, sandbox.url, [f"acct{i}" for i in range(accounts)]
    finally:
        for service in reversed(services):
            service.stop()
        redis.stop()


@contextlib.contextmanager
def igsend_worker(tmp: Path, redis_url: str, sandbox: str, *, processes: int, log_name: str,
                  extra: dict[str, str] | None = None) -> Iterator[Service]:
    """One ``igsend worker --processes N`` on a ``stack`` (started with ``workers=0``), stopped on the way out;
    ``extra``: more environment (e.g. OpenTelemetry's variables)."""
    worker = start_worker(env=igsend_env(redis_url, sandbox, tmp / "accounts.toml", extra), log_path=tmp / log_name,
                          processes=processes)
    try:
        yield worker
    finally:
        worker.stop()


def wait_all(jobs, timeout: float) -> dict[str, int]:
    from igsend.core import records
    from igsend.core.store import get_redis

    redis = get_redis()
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = {}
        for status in records.statuses(redis, [job.id for job in jobs]):
            counts[status.value] = counts.get(status.value, 0) + 1
        finished = sum(counts.get(s, 0) for s in ("delivered", "dead", "unknown"))
        if finished == len(jobs) or time.monotonic() > deadline:
            return counts
        time.sleep(0.25)


class ProcessMeter:
    """CPU seconds and peak RSS of a set of processes (and their children), sampled in the background."""

    def __init__(self, pids: list[int]):
        import psutil

        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0
        self._cpu0 = self._cpu()
        self._stop = False
        import threading

        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _tree(self):
        import psutil

        for process in self.processes:
            try:
                yield process
                yield from process.children(recursive=True)
            except psutil.NoSuchProcess:
                continue

    def _cpu(self) -> float:
        import psutil

        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        import psutil

        while not self._stop:
            rss = 0
            for process in self._tree():
                try:
                    rss = max(rss, process.memory_info().rss)  # per process: the target is "worker RSS"
                except psutil.NoSuchProcess:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.2)

    def stop(self) -> tuple[float, int]:
        self._stop = True
        self._thread.join()
        return self._cpu() - self._cpu0, self.peak_rss


class RedisMeter:
    """What Redis did between two readings of INFO: commands by name, bytes in and out, CPU seconds."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.before = self._read()

    def _read(self) -> dict:
        info = self.client.info("all")
        calls = {key.removeprefix("cmdstat_"): value["calls"] for key, value in info.items()
                 if key.startswith("cmdstat_")}
        return {"calls": calls, "in": info["total_net_input_bytes"], "out": info["total_net_output_bytes"],
                "cpu": info["used_cpu_sys"] + info["used_cpu_user"]}

    def stop(self, messages: int) -> dict:
        after = self._read()
        calls = {name: after["calls"][name] - self.before["calls"].get(name, 0) for name in after["calls"]}
        calls["info"] = calls.get("info", 0) - 1  # this meter's own reading
        calls = {name: n for name, n in calls.items() if n > 0}
        return {"commands": sum(calls.values()) / messages, "by_command": {
                    name: round(n / messages, 2) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])},
                "bytes_in": (after["in"] - self.before["in"]) / messages,
                "bytes_out": (after["out"] - self.before["out"]) / messages,
                "cpu_per_1000": (after["cpu"] - self.before["cpu"]) / messages * 1000}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def wire_latencies(sandbox: str, sent_at: dict[str, float]) -> tuple[list[float], float, float]:
    """Enqueue-to-accepted latency per message (the sandbox's clock, same host), first and last acceptance."""
    messages = requests.get(f"{sandbox}/_sandbox/messages", timeout=60).json()["messages"]
    latencies, times = [], []
    for message in messages:
        text = (message["body"].get("message") or {}).get("text", "")
        if text in sent_at:
            done = message["received_at"] + LATENCY_MS / 1000
            latencies.append(done - sent_at[text])
            times.append(done)
    return latencies, min(times, default=0), max(times, default=0)


def make_row(name: str, count: int, elapsed: float, latencies: list[float], cpu: float, rss: int) -> dict:
    return {"name": name, "count": count, "rate": count / elapsed, "p50": percentile(latencies, 0.5) * 1000,
            "p99": percentile(latencies, 0.99) * 1000, "cpu_per_1000": cpu / count * 1000,
            "rss_mb": rss / 2**20}


def format_row(row: dict) -> str:
    return (f"{row['name']:<32} {row['rate']:>8.1f} {row['p50']:>8.0f} {row['p99']:>8.0f} "
            f"{row['cpu_per_1000']:>9.2f} {row['rss_mb']:>12.0f}")


def format_redis(figures: dict) -> list[str]:
    top = ", ".join(f"{name} {n:g}" for name, n in list(figures["by_command"].items())[:10])
    return [f"redis per delivered message (send_many + worker; commands run inside Lua scripts counted too): "
            f"{figures['commands']:.1f} commands, {figures['bytes_in']:,.0f} bytes in, "
            f"{figures['bytes_out']:,.0f} bytes out; Redis CPU {figures['cpu_per_1000']:.3f} s per 1,000 messages",
            f"redis commands per message: {top}"]


def wait_sandbox_count(sandbox: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{sandbox}/_sandbox/stats", timeout=10).json()["accepted"] >= count:
            return
        time.sleep(0.5)
    raise RuntimeError("the naive worker did not finish in time")


def reset_sandbox(sandbox: str) -> None:
    requests.delete(f"{sandbox}/_sandbox/messages", timeout=10).raise_for_status()


def run_igsend(worker_pids: list[int], sandbox: str, accounts: list[str], count: int, label: str,
               redis_url: str | None = None) -> dict:
    """One igsend run; with ``redis_url``, the row's ``redis`` holds what Redis did per message (RedisMeter), read
    before the final check of the job records so that the check is not counted. ``last_delivery``: when the
    sandbox accepted the last message (its clock, same host)."""
    from producers import send_many

    redis_meter = RedisMeter(redis_url) if redis_url else None
    meter = ProcessMeter(worker_pids)
    sent_at = {}
    documents = []
    for i in range(count):
        text = f"{label} {i}"
        documents.append({"kind": "text", "recipient": f"r{i}", "text": text, "account": accounts[i % len(accounts)]})
    started = time.time()
    jobs = []
    for start in range(0, count, 500):
        chunk = documents[start:start + 500]
        now = time.time()
        for document in chunk:
            sent_at[document["text"]] = now
        jobs += send_many(chunk).queued
    # Follow the run on the sandbox (HTTP), not by polling job records: reading 5,000 statuses four times a second
    # would load Redis and the 2 cores the worker runs on, and count in the Redis figures per message.
    wait_sandbox_count(sandbox, count, timeout=count / 20 + 60)
    figures = None
    if redis_meter:
        time.sleep(0.5)  # the last answers' outcome scripts and acks
        figures = redis_meter.stop(count)
    counts = wait_all(jobs, timeout=60)
    cpu, rss = meter.stop()
    latencies, _, last = wire_latencies(sandbox, sent_at)
    assert counts.get("delivered") == count, counts
    return {**make_row(label, count, last - started, latencies, cpu, rss), "redis": figures, "last_delivery": last}
