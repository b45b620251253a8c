"""Per-account lanes: where a new message waits until the dispatcher hands it to the Celery queue, in turn with
the other accounts and at its account's budget, so one account's backlog never holds another's replies.

A lane is one account's send class (``text``, ``media``, ``private_reply``): two Redis lists of job ids, ``normal``
and ``bulk``. Producers push into it (lua/create_job.lua); the scheduler's leader runs the dispatcher step
(lua/claim_fair.lua) every few milliseconds: it takes the ready lane with the lowest score (one point per message
handed out, so every lane with work gets its turn; a lane that had none starts at the score last served), bulk only
when the lane's normal list is empty, and keeps the Celery queue at most ``IGSEND_DISPATCH_AHEAD`` deep. A lane
that has used its budget waits in the paced set, scored by when it may go again: a throttled backlog costs nothing
per message until then. Scheduled jobs join their lane when they come due (lua/lane_due.lua); raw Celery clients'
messages, retries and ordered conversations' next messages still go to the Celery queue directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from igsend.core.store import PREFIX

LANE_PREFIX = f"{PREFIX}lane:"
READY_KEY = f"{PREFIX}lanes:ready"  # lanes with work that may go now, scored by messages handed out
PACED_KEY = f"{PREFIX}lanes:paced"  # lanes ahead of their budget, scored by when they may go again
TAT_KEY = f"{PREFIX}lanes:tat"  # lane -> when its budget is next free (GCRA's theoretical arrival time)
RATE_KEY = f"{PREFIX}lanes:rate"  # lane -> its budget in messages per second (workers write it at start)
SCORE_KEY = f"{PREFIX}lanes:score"  # lane -> its score while paced
CLOCK_KEY = f"{PREFIX}lanes:clock"  # the score last served: where a lane that had no work (re)joins
PRIORITIES = ("normal", "bulk")
#: Seconds of an account's budget the dispatcher may hand out ahead of time, so its workers never run dry.
LEAD = 0.5


def lane_key(account: str, send_class: str) -> str:
    """The lane of ``account``'s messages of ``send_class`` (its lists are this key plus ``:normal``/``:bulk``)."""
    return f"{LANE_PREFIX}{account}|{send_class}"


def lane_keys(account: str, send_class: str) -> list[str]:
    """What lua/create_job.lua needs to put a job into its lane: the lane, the ready set, the paced set, the clock."""
    return [lane_key(account, send_class), READY_KEY, PACED_KEY, CLOCK_KEY]


def claim_keys(job_prefix: str, moving: str, pending: str) -> list[str]:
    return [READY_KEY, PACED_KEY, TAT_KEY, RATE_KEY, SCORE_KEY, moving, pending, job_prefix, CLOCK_KEY]


def set_rates(client: Any, rates: Mapping[tuple[str, str], float]) -> None:
    """Record each (account, send class)'s budget for the dispatcher (messages per second)."""
    if rates:
        client.hset(RATE_KEY, mapping={lane_key(account, send_class): rate
                                       for (account, send_class), rate in rates.items()})


def waiting(client: Any) -> dict[str, dict[str, int]]:
    """``{account: {"text/normal": 12, "text/bulk": 20000, ...}}``: what waits in each lane with work (the ready
    and paced ones), by send class and priority. Two list lengths per lane with work, in one round trip."""
    lanes: list[str] = [*client.zrange(READY_KEY, 0, -1), *client.zrange(PACED_KEY, 0, -1)]
    if not lanes:
        return {}
    pipe = client.pipeline(transaction=False)  # pragma: no mutate (MULTI or not: the same lengths)
    for lane in lanes:
        for priority in PRIORITIES:
            pipe.llen(f"{lane}:{priority}")
    lengths = iter(pipe.execute())
    found: dict[str, dict[str, int]] = {}
    for lane in lanes:
        account, _, send_class = lane[len(LANE_PREFIX):].rpartition("|")
        for priority in PRIORITIES:
            count = int(next(lengths))
            if count:
                found.setdefault(account, {})[f"{send_class}/{priority}"] = count
    return found


def waiting_total(client: Any) -> int:
    return sum(sum(classes.values()) for classes in waiting(client).values())
