"""The README's first screens, run as a newcomer runs them: the "Two commands" block and the "Try it by hand"
block, taken from README.md by their headings, on a clean data directory with nothing configured (no
IGSEND_REDIS_URL: nothing of anyone's Redis is touched), checking what they print."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from igsend.local.embedded_redis import free_port, redis_answers
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def shell_block(heading: str) -> list[str]:
    """The commands of the first ```bash block under ``heading`` (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    section = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert section, f"README.md has no heading {heading!r}"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    assert block, f"no bash block under {heading!r}"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def python_first_message() -> str:
    """The README's "A first message" Python block, run as a script: the sandbox's recipient for IGSID, and the
    last line's value printed (as the REPL a newcomer pastes it into shows it)."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## A first message\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert section, "README.md has no heading 'A first message'"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block, "no python block under 'A first message'"
    lines = [line.split("  #")[0].rstrip() for line in block.group(1).replace("IGSID", "6543210987654321")
             .splitlines() if line.strip()]
    return "\n".join([*lines[:-1], f"print(repr({lines[-1]}))"])


def newcomer_env() -> dict[str, str]:
    """A shell with .venv/bin on PATH and nothing of igsend configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IGSEND_") and k != "VIRTUAL_ENV"}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def run(command: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=newcomer_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_two_commands(tmp_path: Path) -> None:
    """`ops/demo` is `ops/bootstrap embedded` then `igsend demo`; the bootstrap (pip) is what `ops/test` already
    did, so this runs the `igsend demo` it calls. `ops/test` is what runs this test."""
    assert shell_block("Two commands") == ["ops/demo", "ops/test"]
    assert (ROOT / "ops" / "demo").read_text().splitlines()[-1] == 'exec .venv/bin/igsend demo "$@"'
    demo = run("igsend demo", tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    first = demo.stdout.splitlines()[0]
    assert re.fullmatch(r"redis    redis://127\.0\.0\.1:\d+/0  \(private, started by igsend demo; AOF in "
                        + re.escape(str(tmp_path / ".igsend" / "demo-redis")) + r"; --redis-url or "
                        r"IGSEND_REDIS_URL to use another\)", first), first
    assert ":6379/" not in first
    assert "22/22 delivered" in demo.stdout
    assert not redis_answers(first.split()[1])  # stopped again


@pytest.mark.scenario
def test_try_it_by_hand(tmp_path: Path) -> None:
    commands = shell_block("Try it by hand")
    assert commands[0] == "igsend up"
    # terminal 1; free ports instead of the defaults, so the test never meets another service on this machine
    ports = [f"--{name}-port {free_port()}" for name in ("api", "flower", "metrics", "sandbox")]
    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    up = subprocess.Popen(["bash", "-c", f"exec {commands[0]} {' '.join(ports)}"], cwd=tmp_path,
                          env=newcomer_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "igsend is up" in (tmp_path / "up.log").read_text() or up.poll() is not None,
                   timeout=120, interval=0.2)
        output = (tmp_path / "up.log").read_text()
        assert up.poll() is None, output
        assert output.startswith("redis    redis://127.0.0.1:") and "(private, started by igsend up;" in output
        transcript = {command: run(command, tmp_path, timeout=90) for command in commands[1:]}  # terminal 2
        snippet = subprocess.run([sys.executable, "-c", python_first_message()], cwd=tmp_path, env=newcomer_env(),
                                 capture_output=True, text=True, timeout=120)  # and the Python first message
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-2000:]

    sent = transcript['igsend send text 6543210987654321 Hi --wait']
    chosen = re.escape(f"(the running `igsend up`, pid {up.pid}, from .igsend/up.json)")
    assert sent.returncode == 0 and re.fullmatch(rf"redis: 127\.0\.0\.1:\d+ db 0 {chosen}\n", sent.stderr), sent.stderr
    outcome = json.loads(sent.stdout)
    assert outcome["status"] == "delivered" and outcome["result"]["recipient_id"] == "6543210987654321"

    assert snippet.returncode == 0, snippet.stderr  # beside `igsend up`, with nothing set: up's Redis, not 6379's
    result = ast.literal_eval(snippet.stdout)  # the dict the REPL would show
    assert result["recipient_id"] == "6543210987654321" and result["message_id"]

    refused = transcript["igsend send text ERR_551_1545041 Hi --wait"]
    assert refused.returncode == 1
    dead = json.loads(refused.stdout)
    assert dead["status"] == "dead" and dead["error"]["code"] == 551

    dlq = transcript["igsend dlq list"].stdout.splitlines()
    assert dlq[0].split()[:3] == ["JOB", "ID", "ACCOUNT"] and dlq[1].split()[0] == dead["id"]
    assert dlq[-1].startswith("1 dead letter ")

    accounts = transcript["igsend accounts list"].stdout.splitlines()
    assert accounts[0].split()[0] == "ACCOUNT"
    # TOKEN EXPIRES: unknown for an Instagram-Login token igsend does not refresh (docs/tokens.md)
    assert accounts[1].split() == ["default", "me", "instagram", "100", "10", "1", "0", "unknown", "healthy"]
