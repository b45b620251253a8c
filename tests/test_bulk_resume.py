"""`igsend send-bulk` is safe to interrupt and to run again: Ctrl-C says what was queued and how to resume,
and a second run of the same file queues only what the first did not (a real Redis db no worker reads)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_lib

from tests.conftest import queue_depth

IGSEND = [sys.executable, "-m", "igsend.cli"]


def bulk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*IGSEND, "send-bulk", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def jobs(r: redis_lib.Redis) -> int:
    return sum(1 for _ in r.scan_iter("igsend:job:*", count=5000))


def test_interrupted_bulk_run_resumes_without_sending_twice(private_db: redis_lib.Redis, tmp_path: Path) -> None:
    lines = 20_000
    path = tmp_path / "big.jsonl"
    # Few distinct recipients and texts: many lines are identical and must still be one message each.
    path.write_text("".join(json.dumps({"kind": "text", "recipient": f"r{i % 7}", "text": f"hello {i % 3}"}) + "\n"
                            for i in range(lines)))
    process = subprocess.Popen([*IGSEND, "send-bulk", str(path), "--no-wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while private_db.dbsize() == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    match = re.fullmatch(r"interrupted: queued (\d+) message\(s\), invalid 0, through line (\d+)\n", out)
    assert match, out
    queued, last_line = int(match[1]), int(match[2])
    assert 0 < queued < lines and queued == last_line
    assert "run the same command again" in err and "Aborted" not in err and "Traceback" not in err
    assert jobs(private_db) == queued == queue_depth(private_db)  # what it says is exactly what is queued

    again = bulk(str(path), "--no-wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"queued {lines - queued}, already queued {queued}, invalid 0"), again.stdout
    assert jobs(private_db) == lines  # every line exactly once
    assert queue_depth(private_db) == lines


def test_bom_bad_utf8_own_keys_and_no_idempotency(private_db: redis_lib.Redis, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    same = json.dumps({"kind": "text", "recipient": "u1", "text": "same"}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + same + b"\n"  # a BOM before line 1
                     + b'{"kind": "text", "recipient": "u2", "text": "caf\xe9"}\n'  # latin-1, not UTF-8
                     + same + b"\n"
                     + json.dumps({"kind": "text", "recipient": "u3", "text": "mine",
                                   "idempotency_key": "my-key"}).encode() + b"\n")
    first = bulk(str(path), "--no-wait", "--json")
    assert first.returncode == 1  # line 2 is invalid
    assert "line 2: not valid UTF-8 (byte 0xe9 at column" in first.stderr and "Traceback" not in first.stderr
    assert json.loads(first.stdout)["queued"] == 3
    assert private_db.exists("igsend:idem:default:my-key")
    assert bulk(str(path), "--no-wait").returncode == 1
    assert jobs(private_db) == 3  # nothing twice
    assert bulk(str(path), "--no-wait", "--no-idempotency").returncode == 1
    assert jobs(private_db) == 5  # asked for: the two key-less lines again; the line with its own key is kept


def test_help_documents_idempotency() -> None:
    shown = subprocess.run([*IGSEND, "send-bulk", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(shown.stdout.split())
    assert "--no-idempotency" in text and "idempotency key derived from its content" in text
    assert "running the same file again queues only the lines that were not queued yet" in text
