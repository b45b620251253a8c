"""A setting igsend cannot use is one line naming it and the rule: a typed ConfigurationError in library code,
exit 2 from the CLI, and `igsend worker` refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from igsend.core.errors import ConfigurationError, IgsendError
from igsend.core.settings import Settings

IGSEND = [sys.executable, "-m", "igsend.cli"]


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("IGSEND_SEND_DEADLINE", "soon", "must be a number"), ("IGSEND_SEND_DEADLINE", "-1", "positive"),
    ("IGSEND_UNKNOWN_OUTCOME", "retry", "reconcile, dead-letter or resend"),
    ("IGSEND_MAX_ATTEMPTS", "many", "must be a number"),
])
def test_a_bad_setting_is_a_typed_error_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                  rule: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    assert isinstance(info.value, IgsendError) and name in str(info.value) and rule in str(info.value)


def test_the_cli_and_the_worker_say_it_in_one_line(redis_url: str) -> None:
    env = {**os.environ, "IGSEND_REDIS_URL": redis_url, "IGSEND_SEND_DEADLINE": "soon",
           "IGSEND_ACCESS_TOKEN": "IGQ" + "x" * 40}
    status = subprocess.run([*IGSEND, "status", "some-job"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 2
    assert status.stderr.strip().splitlines() == ["error: IGSEND_SEND_DEADLINE: must be a number (got 'soon')"]
    worker = subprocess.run([*IGSEND, "worker", "--processes", "1"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert worker.returncode in (2, 78)  # refused before it starts, whichever layer reads the setting first
    lines = worker.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("IGSEND_SEND_DEADLINE: must be a number (got 'soon')")
