"""Per-account send budgets: which login kind an account uses, Meta's calls-per-second for it, and the hourly
private-reply budget."""

from __future__ import annotations

import time

LOGINS = ("instagram", "facebook")

# Meta's Graph API rate-limiting page (checked 2026-11): Instagram API with Instagram Login, 100 calls/s per
# professional account for text, links, reactions and stickers; Messenger API for Instagram (Facebook Login),
# 300 calls/s; audio or video 10 calls/s for both.
BUDGETS: dict[str, dict[str, float]] = {
    "instagram": {"text": 100.0, "media": 10.0},
    "facebook": {"text": 300.0, "media": 10.0},
}

# Same page, and the private-replies pages (Instagram Platform "Send a Private Reply to a Commenter";
# Instagram Messaging "Private Replies"): 750 calls per hour per account for private replies to comments on
# posts and reels, a budget of its own beside the per-second ones, for both login kinds.
PRIVATE_REPLIES_PER_HOUR = 750.0
HOUR = 3600.0


def login_from_token(token: str | None) -> str | None:
    """Instagram-Login user tokens start ``IG`` (IGQ…, IGAA…); Page tokens from Facebook Login start ``EAA``."""
    if not token:
        return None
    if token.startswith("IG"):
        return "instagram"
    if token.startswith("EAA"):
        return "facebook"
    return None


def check_login(value: object, what: str) -> str:
    if value not in LOGINS:
        raise ValueError(f"{what} must be one of {', '.join(LOGINS)}, got {value!r}")
    return str(value)


class Bucket:
    """Token bucket for ``rate`` calls per ``period`` seconds: it holds one period's worth of calls (one second
    for the calls/s budgets, an hour for private replies) and refills continuously at ``rate / period`` a second.
    """

    def __init__(self, rate: float, period: float = 1.0):
        self.rate, self.period = rate, period
        self.tokens = rate
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate / self.period)
        self.stamp = now

    def take(self) -> float:
        """Spend one call; return 0 if allowed, else the seconds until one is available."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) * self.period / self.rate

    def used_percent(self) -> int:
        self._refill()
        return max(0, min(100, round((1 - self.tokens / self.rate) * 100)))
