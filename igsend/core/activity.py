"""What each account's messages are doing now (the console's overview): queued, scheduled, retrying, in flight,
and delivered or dead in the last hour.

Read from the sets igsend keeps anyway (``igsend:pending``, ``igsend:delayed``, ``igsend:inflight``), the lengths
of the accounts' lanes (igsend.core.lanes: new messages the dispatcher has not handed out yet, counted as queued)
and the outcome stream (``igsend:outcomes``), never by scanning every key. Each set is read up to ``sample`` jobs, so a
refresh stays cheap with a deep queue; ``exact`` says whether every job was counted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from igsend.core import lanes
from igsend.core.store import DELAYED_KEY, INFLIGHT_KEY, OUTCOMES_KEY, PENDING_KEY, get_redis, job_key

COLUMNS = ("queued", "scheduled", "retrying", "in_flight", "delivered_1h", "dead_1h")
SAMPLE = 5000


@dataclass
class Activity:
    #: account -> column (COLUMNS) -> how many
    accounts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: every job of every set was counted (False: the sets hold more than the sample)
    exact: bool = True
    #: the sets' sizes, whatever the sample
    totals: dict[str, int] = field(default_factory=dict)
    #: account -> "class/priority" (``text/bulk``, ...) -> messages waiting in its lanes
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)


def read(*, client: redis.Redis | None = None, sample: int = SAMPLE, now: float | None = None) -> Activity:
    client = client or get_redis()
    now = time.time() if now is None else now
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    activity = Activity()
    for key, name in ((PENDING_KEY, "queued"), (DELAYED_KEY, "waiting"), (INFLIGHT_KEY, "in_flight")):
        ids = cast(list[str], client.zrange(key, 0, sample - 1))
        total = int(client.zcard(key))
        activity.totals[name] = total
        activity.exact &= total <= sample
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "account", "status")
        for account, status in pipe.execute():
            if account is None:
                continue
            column = name if name != "waiting" else ("scheduled" if status == "scheduled" else
                                                     "retrying" if status == "retrying" else "queued")
            counts[account][column] += 1
    activity.lanes = lanes.waiting(client)
    for account, waiting in activity.lanes.items():
        counts[account]["queued"] += sum(waiting.values())
    activity.totals["queued"] = activity.totals.get("queued", 0) + sum(
        sum(waiting.values()) for waiting in activity.lanes.values())
    since = f"{int((now - 3600) * 1000)}-0"
    outcomes = cast(list[tuple[str, dict[str, Any]]], client.xrange(OUTCOMES_KEY, since, "+", count=sample * 4))
    activity.exact &= len(outcomes) < sample * 4
    for _, fields in outcomes:
        status = fields.get("status")
        if status == "delivered":
            counts[fields.get("account") or "?"]["delivered_1h"] += 1
        elif status in ("dead", "unknown"):
            counts[fields.get("account") or "?"]["dead_1h"] += 1
    activity.accounts = dict(counts)
    return activity
