"""The same install on every machine: uv.lock matches pyproject.toml, and the virtualenv the tests run in holds
exactly the locked packages of the dev extra (what `ops/bootstrap dev` installs), nothing more or less."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def uv() -> str:
    found = shutil.which("uv") or (str(ROOT / ".uv" / "bin" / "uv") if (ROOT / ".uv" / "bin" / "uv").exists() else None)
    if found is None:
        pytest.skip("no uv: ops/bootstrap installs it (CI always has it)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": sys.prefix, "UV_NO_PROGRESS": "1"}
    return subprocess.run([uv(), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_lock_matches_pyproject() -> None:
    checked = run("lock", "--check")
    assert checked.returncode == 0, checked.stderr


def test_the_test_environment_holds_exactly_the_locked_packages() -> None:
    checked = run("sync", "--locked", "--extra", "dev", "--check", "--python", sys.executable)
    assert checked.returncode == 0, checked.stderr
