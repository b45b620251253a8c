"""The HTTP contract, fuzzed: Schemathesis against a real ``igsend api`` (``ops/fuzz``; bounded in CI by
tests/test_contract_fuzz.py).

Schemathesis reads the OpenAPI document the API serves and runs its four phases (examples, coverage, fuzzing,
stateful) with every check, with a key of every scope so nothing is skipped for authentication. The API runs on a
Redis of its own, with dead letters made the way a worker makes them (a queued job, then its dead outcome) so
that ``GET /v1/dead-letters`` has entries whose ids the stateful phase follows (the document's links) into a
replay. No worker runs: a worker announces the accounts it serves, and the API then refuses every other account
name (422), a rule of the server's state that no document can state. The rules the document cannot state are told
to Schemathesis by :mod:`igsend.local.fuzz_hooks`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOOKS = Path(__file__).with_name("fuzz_hooks.py")
SETTINGS = Path(__file__).with_name("fuzz.toml")
PHASES = ("examples", "coverage", "fuzzing", "stateful")


def seed_dead_letters(count: int) -> list[str]:
    """``count`` dead letters in the Redis of ``IGSEND_REDIS_URL``, made as a worker makes them: a job queued by
    :func:`producers.send`, then its dead outcome with Meta's error. Returns their job ids."""
    from igsend.core.records import Outcomes
    from igsend.core.store import get_redis
    from producers import send

    ids = []
    for index in range(count):
        job = send({"kind": "text", "recipient": "6543210987654321", "text": f"fuzz dead letter {index}"})
        error = {"code": 100, "subcode": 2018001, "message": "No matching user found", "fbtrace_id": "AbCdEf123",
                 "http_status": 400, "class": "permanent"}
        attempt = {"attempt": 1, "at": 1.0e9, "outcome": "permanent", "http_status": 400, "code": 100,
                   "subcode": 2018001, "message": "No matching user found", "fbtrace_id": "AbCdEf123"}
        # admitted and POSTed, as a worker's would be: an outcome applies only to the attempt in flight
        get_redis().hset(f"igsend:job:{job.id}", mapping={"status": "sending", "inflight": 1})
        Outcomes(get_redis(), record_ttl=3600).dead(job.id, "permanent: no matching user", error, attempt)
        ids.append(job.id)
    return ids


def seed_in_subprocess(redis_url: str, count: int) -> None:
    """:func:`seed_dead_letters` in a process of its own, so the caller's Redis clients and settings stay as
    they are."""
    code = f"from igsend.local.fuzz import seed_dead_letters; seed_dead_letters({count})"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "IGSEND_REDIS_URL": redis_url}, check=True,
                   timeout=120)


def st_command(api_url: str, key: str, *, examples: int, report: Path, seed: int | None = None,
               extra: list[str] | None = None, phases: tuple[str, ...] = PHASES) -> list[str]:
    """The ``st run`` command line: every check, the ``phases`` (default all), ``examples`` per operation, a JSON
    report, igsend's settings (fuzz.toml)."""
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(SETTINGS), "run", f"{api_url}/openapi.json", "--checks", "all",
               "--phases", ",".join(phases), "--suppress-health-check", "too_slow",
               "-H", f"Authorization: Bearer {key}", "--max-examples", str(examples), "--workers", "1",
               "--request-timeout", "20", "--no-color", "--report", "json", "--report-json-path", str(report)]
    if seed is not None:
        command += ["--seed", str(seed), "--generation-database", "none"]
    return command + (extra or [])


def st_env() -> dict[str, str]:
    """The environment of ``st run``: the hooks, and no Hypothesis database left in the working directory."""
    return {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "PYTHONUNBUFFERED": "1"}


@dataclass
class Outcome:
    """What a run found: its failures and errors, and the warnings that mean an operation was not exercised."""

    report: dict[str, Any]
    output: str
    returncode: int

    @property
    def failures(self) -> list[Any]:
        return list(self.report.get("failures") or [])

    @property
    def errors(self) -> list[Any]:
        return list(self.report.get("errors") or [])

    @property
    def unexercised(self) -> dict[str, list[Any]]:
        """Operations that answered only 401/403, or only 404 to the data Schemathesis had."""
        warnings = self.report.get("warnings") or {}
        return {name: list(warnings.get(name) or []) for name in ("missing_auth", "missing_test_data")
                if warnings.get(name)}

    @property
    def ok(self) -> bool:
        return not (self.failures or self.errors or self.unexercised) and self.returncode == 0


def run_schemathesis(api_url: str, key: str, *, examples: int, report: Path, seed: int | None = None,
                     extra: list[str] | None = None, timeout: float = 1800, echo: bool = False,
                     phases: tuple[str, ...] = PHASES) -> Outcome:
    """Run ``st run`` against ``api_url`` and read its JSON report."""
    command = st_command(api_url, key, examples=examples, report=report, seed=seed, extra=extra, phases=phases)
    done = subprocess.run(command, env=st_env(), cwd=report.parent, capture_output=not echo, text=True,
                          timeout=timeout)
    output = "" if echo else done.stdout + done.stderr
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return Outcome(data, output, done.returncode)
