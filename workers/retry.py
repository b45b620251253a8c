"""When to try a failed message again: exponential backoff with full jitter, bounded by attempts and age."""

from __future__ import annotations

import random
from dataclasses import dataclass

#: An unrecognised Graph error code gets this many attempts at most before it is dead-lettered.
UNRECOGNISED_MAX_ATTEMPTS = 3
#: Wait after a throttling error when Meta names no time.
DEFAULT_THROTTLE_WAIT = 30.0
#: The longest pause one throttling answer can impose (an answer announcing ``Retry-After: 1e9`` would park an
#: account for 30 years). If Meta still throttles after it, the next answer pauses the account again.
MAX_THROTTLE_WAIT = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """Keyword options with the defaults of ``igsend.core.settings.Settings``."""

    max_attempts: int = 8
    max_age: float = 24 * 3600
    base: float = 1.0
    cap: float = 300.0

    def backoff(self, failures: int) -> float:
        """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): uniform in
        [0, min(cap, base * 2**failures)], so retries of many messages spread out instead of colliding."""
        return random.uniform(0, min(self.cap, self.base * 2 ** max(0, failures - 1)))

    def give_up(self, failures: int, age: float, *, bounded: bool = False) -> str | None:
        """The reason to stop retrying, or None to retry."""
        limit = min(self.max_attempts, UNRECOGNISED_MAX_ATTEMPTS) if bounded else self.max_attempts
        if failures >= limit:
            return f"gave up after {failures} failed attempts"
        if age >= self.max_age:
            return f"gave up: message older than {self.max_age:.0f} s"
        return None


def throttle_wait(retry_after: float, regain_seconds: float) -> float:
    """How long an account pauses after a throttling error: what Meta announced, capped at MAX_THROTTLE_WAIT."""
    announced = max(retry_after, regain_seconds)
    return min(announced, MAX_THROTTLE_WAIT) if announced > 0 else DEFAULT_THROTTLE_WAIT
