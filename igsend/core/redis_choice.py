"""Which Redis a process uses, and why: ``IGSEND_REDIS_URL``, else the running ``igsend up`` of this data
directory, else the default. The Python API, the CLI, the HTTP API and the workers all choose here, so a second
terminal (or a script) beside ``igsend up`` reaches the same Redis as ``igsend send`` does."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from igsend.core.redis_url import redis_address

log = logging.getLogger("igsend.redis")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: What a running ``igsend up`` writes about itself in its data directory (pid, Redis URL, API address).
STACK_STATE = "up.json"


@dataclass(frozen=True)
class RedisChoice:
    url: str
    #: Where the URL came from, for a person: "IGSEND_REDIS_URL", "igsend up (pid 123, .igsend/up.json)", ...
    source: str

    def describe(self) -> str:
        """``127.0.0.1:6379 db 0 (from IGSEND_REDIS_URL)``: the Redis without its password, and why."""
        return f"{redis_address(self.url)} ({self.source})"


def running_stack(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What a running ``igsend up`` of this data directory wrote about itself (its Redis URL, ...), or None when
    none runs (no file, or its process is gone)."""
    try:
        state = json.loads((Path(data_dir) / STACK_STATE).read_text())
        os.kill(int(state["pid"]), 0)
        if not isinstance(state.get("redis_url"), str):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return cast(dict[str, Any], state)


def choose_redis_url(env: Mapping[str, str], data_dir: str) -> RedisChoice:
    """The Redis for a process whose environment is ``env``, in the one order every entry point uses."""
    if env.get("IGSEND_REDIS_URL"):
        return RedisChoice(env["IGSEND_REDIS_URL"], "from IGSEND_REDIS_URL")
    stack = running_stack(data_dir)
    if stack is not None:
        return RedisChoice(stack["redis_url"],
                           f"the running `igsend up`, pid {stack['pid']}, from {Path(data_dir) / STACK_STATE}")
    return RedisChoice(DEFAULT_REDIS_URL, "the default: IGSEND_REDIS_URL is not set and no `igsend up` runs in "
                                          f"{data_dir}")


def announce(choice: RedisChoice) -> None:
    """Say at INFO which Redis this process chose (a script that imports producers shows it with logging on)."""
    log.info("igsend uses Redis at %s", choice.describe())
