"""The ops scripts run in CI at a small size so they cannot rot: chaos (with its targets), rate, throughput."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parent.parent / "ops"


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(OPS / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=OPS.parent)


@pytest.mark.scenario
def test_chaos_small_loses_nothing_and_doubles_nothing() -> None:
    run = _run("chaos.py", "--small", "--seed", "7", timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout[run.stdout.index("{"):run.stdout.rindex("}") + 1])
    assert report["accepted"] == 200
    assert report["lost"] == 0
    assert report["duplicates"] == 0  # lost answers are reconciled (the default), never resent blindly
    assert report["delivered"] + report["dead"] + report["unknown"] == 200
    assert report["reconciled"]["total"] == report["reconciled"]["delivered"] + report["reconciled"]["resent"]


@pytest.mark.scenario
def test_rate_bench_small_runs() -> None:
    run = _run("benchmarks.py", "rate", "--small", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "instagram" in run.stdout and "facebook" in run.stdout and "throttled" in run.stdout


def test_sweep_bench_small_finds_the_lost_and_only_them() -> None:
    run = _run("benchmarks.py", "sweep", "--small", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "10 lost among the oldest" in run.stdout


@pytest.mark.scenario
def test_throughput_bench_small_runs() -> None:
    run = _run("benchmarks.py", "throughput", "--small", "--rounds", "2", timeout=500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "igsend/naive" in run.stdout and "send_many" in run.stdout
    # --rounds 2: one more pair of the bare POST and igsend, and the median of the two ratios
    assert len(re.findall(r"^round 2: bare POST [0-9.]+ ms, igsend [0-9.]+ ms = [0-9.]+x$", run.stdout, re.M)) == 1
    assert re.search(r"over 2 rounds \(the table's, then each pair\): [0-9.]+x, [0-9.]+x; median = [0-9.]+x",
                     run.stdout)
    # the floors each change is measured against, and what Redis does per message
    assert "featureless Celery" in run.stdout and "igsend / bare POST (CPU/msg)" in run.stdout
    assert "redis per delivered message" in run.stdout
    assert "tracing on / off (CPU/msg)" in run.stdout  # traces cost what they cost, measured beside the rest
    assert "tracing 10 % sampled / off (CPU/msg)" in run.stdout


@pytest.mark.scenario
def test_fairness_bench_small_runs() -> None:
    run = _run("benchmarks.py", "fairness", "--small", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for row in ("B alone", "B behind A's 1,000", "saturated: highest/lowest per 2 s window", "idle account's reply",
                "acct0: 30 normal after 300 bulk", "acct0: 30 texts after 300 private replies"):
        assert row in run.stdout, row
    assert "p95 ratio FIFO/lanes, B behind A: " in run.stdout


@pytest.mark.scenario
def test_dispatch_bench_small_runs() -> None:
    run = _run("benchmarks.py", "dispatch", "--small", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]  # every message waited, then handed out
    rows = [line.split() for line in run.stdout.splitlines() if line[:1].isdigit()]
    assert [row[0] for row in rows] == ["10", "100", "1,000"]
    assert all(float(row[1]) > 0 and int(row[3]) < int(row[4]) for row in rows)  # a lane entry < an envelope


@pytest.mark.scenario
def test_waiters_bench_small_runs() -> None:
    run = _run("benchmarks.py", "waiters", "--small", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]  # every waiter answered, 503 past the slots
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [row["waiters"] for row in rows] == [24, 100]
    assert all(row["redis_commands_in_hold"] == 0 for row in rows)  # nobody polls while the jobs are held


@pytest.mark.scenario
def test_callbacks_bench_small_runs() -> None:
    run = _run("benchmarks.py", "callbacks", "--small", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for variant in ("no callback endpoint", "one healthy endpoint (204)", "one endpoint never answering"):
        assert variant in run.stdout, variant
    # every message delivered in each row (run_igsend checks), and every callback received once, verified
    assert "healthy endpoint: 300 of 300 callbacks received (0 twice, 0 not verified)" in run.stdout
    assert "silent endpoint: " in run.stdout and ", 0 sent" in run.stdout
