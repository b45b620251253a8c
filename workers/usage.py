"""Reads Meta's usage headers and turns them into a slowdown factor and a wait.

``X-App-Usage`` holds whole percentages (``call_count``, ``total_time``, ``total_cputime``); throttling
starts at 100. ``X-Business-Use-Case-Usage`` maps a business object id to a list of entries with the same
percentages and ``estimated_time_to_regain_access`` in minutes ("Messenger Platform rate limits", 2026).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

#: Below this usage the account runs at its full budget; above it the rate shrinks linearly.
SLOWDOWN_FROM = 80.0
#: The slowest an account is made to run by usage alone (a fraction of its budget).
MIN_FACTOR = 0.1


@dataclass(frozen=True)
class Usage:
    percent: float = 0.0  # the highest percentage Meta reported
    regain_seconds: float = 0.0  # Meta's estimate of when a throttled account may call again

    @property
    def factor(self) -> float:
        """Share of the budget to use now: 1 below SLOWDOWN_FROM %, falling to MIN_FACTOR at 100 %."""
        if self.percent <= SLOWDOWN_FROM:
            return 1.0
        room = (100.0 - self.percent) / (100.0 - SLOWDOWN_FROM)
        return max(MIN_FACTOR, min(1.0, room))


def _percentages(entry: object) -> list[float]:
    if not isinstance(entry, Mapping):
        return []
    values = []
    for key in ("call_count", "total_time", "total_cputime"):
        try:
            values.append(float(entry.get(key, 0) or 0))
        except (TypeError, ValueError):
            continue
    return values


def read_usage(headers: Mapping[str, str]) -> Usage:
    """Parse both headers (missing or malformed ones count as 0 %)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    percents: list[float] = [0.0]
    regain = 0.0
    try:
        percents += _percentages(json.loads(lowered.get("x-app-usage", "{}")))
    except ValueError:
        pass
    try:
        buc = json.loads(lowered.get("x-business-use-case-usage", "{}"))
    except ValueError:
        buc = {}
    if isinstance(buc, Mapping):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else []:
                percents += _percentages(entry)
                if isinstance(entry, Mapping):
                    try:
                        regain = max(regain, float(entry.get("estimated_time_to_regain_access") or 0) * 60)
                    except (TypeError, ValueError):
                        pass
    return Usage(percent=max(percents), regain_seconds=regain)


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds form), 0 when absent or unreadable."""
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return 0.0
            return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
    return 0.0
