"""Per-minute series for the console's charts, kept in Redis at a fixed size: delivered, dead, throttled and waiting
per account per minute, and the delivery latency (queued to Meta's answer) as a histogram per minute.

One string per account per UTC day, ``igsend:series:{account}:{day}`` (and ``igsend:series:*:{day}`` for every
account together): 1,440 records of :data:`RECORD_BITS` bits, counted with ``BITFIELD … OVERFLOW SAT INCRBY`` in
the step that records each outcome (lua/finish.lua, ``records.Outcomes.dead``, ``records.Outcomes.retry``), so a
killed worker never loses a count it recorded, and nothing grows with traffic: at most :data:`DAY_BYTES` bytes per
account per day, kept :data:`KEEP_SECONDS` (today and yesterday: the last 24 hours). ``waiting`` is written once a
minute by the scheduler's leader (a gauge, not a count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis
from redis.client import NEVER_DECODE

from igsend.core.store import PREFIX

#: Fields of one minute's record: name -> (bit offset, bits). Counts saturate at their width's maximum.
FIELDS: dict[str, tuple[int, int]] = {"delivered": (0, 16), "dead": (16, 16), "throttled": (32, 16),
                                      "waiting": (48, 32)}
#: Upper bounds, seconds, of the latency histogram's buckets (the last one: anything slower).
LATENCY_BOUNDS = (0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, float("inf"))
LATENCY_OFFSET = 80
RECORD_BITS = LATENCY_OFFSET + 16 * len(LATENCY_BOUNDS)  # 208 bits: 26 bytes a minute
MINUTES = 1440
DAY_BYTES = MINUTES * RECORD_BITS // 8  # 37,440
#: A day's string outlives the day by a day: the last 24 hours always span at most two.
KEEP_SECONDS = 2 * 86400
EVERY_ACCOUNT = "*"
#: Stands for "no series" in the finish script (an igsend key name, so ACL key patterns cover it).
NO_SERIES_KEY = f"{PREFIX}series:"


def series_key(account: str, at: float) -> str:
    return f"{PREFIX}series:{account}:{int(at // 86400)}"


def offset(at: float, name: str) -> int:
    """The bit offset of field ``name`` in the record of the minute of ``at``."""
    minute = int(at % 86400 // 60)
    return minute * RECORD_BITS + FIELDS[name][0]


def latency_offset(at: float, seconds: float) -> int:
    """The bit offset of the latency bucket ``seconds`` falls in, in the record of the minute of ``at``."""
    bucket = next(i for i, bound in enumerate(LATENCY_BOUNDS) if seconds <= bound)
    return int(at % 86400 // 60) * RECORD_BITS + LATENCY_OFFSET + 16 * bucket


def count(pipe: redis.client.Pipeline, account: str, name: str, at: float) -> None:
    """Count one ``name`` (``dead`` or ``throttled``) for ``account`` at ``at``, in ``pipe`` (the outcome's
    transaction)."""
    for who in (account, EVERY_ACCOUNT):
        key = series_key(who, at)
        pipe.execute_command("BITFIELD", key, "OVERFLOW", "SAT", "INCRBY", "u16", offset(at, name), 1)
        pipe.expire(key, KEEP_SECONDS)


def set_waiting(client: redis.Redis, waiting: dict[str, int], at: float) -> None:
    """The waiting gauge of each account (and their sum) for the minute of ``at``."""
    pipe = client.pipeline(transaction=False)
    for who, value in (*waiting.items(), (EVERY_ACCOUNT, sum(waiting.values()))):
        key = series_key(who, at)
        pipe.execute_command("BITFIELD", key, "SET", "u32", offset(at, "waiting"), min(int(value), 2**32 - 1))
        pipe.expire(key, KEEP_SECONDS)
    pipe.execute()


@dataclass
class Series:
    """One account's (or every account's) minutes, oldest first: ``start`` is the first minute's Unix time."""

    start: float
    delivered: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    throttled: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    latency: list[list[int]] = field(default_factory=list)  # per minute, one count per bucket

    def latency_quantile(self, q: float) -> list[float | None]:
        """Per minute, the upper bound of the bucket that holds the ``q`` quantile (None: nothing delivered)."""
        out: list[float | None] = []
        for buckets in self.latency:
            total = sum(buckets)
            if not total:
                out.append(None)
                continue
            seen = 0
            for bound, n in zip(LATENCY_BOUNDS, buckets, strict=True):
                seen += n
                if seen >= q * total:
                    out.append(bound)
                    break
        return out


def read(client: redis.Redis, account: str = EVERY_ACCOUNT, *, minutes: int = 60, now: float | None = None) -> Series:
    """The last ``minutes`` minutes (at most a day) of ``account``, the current minute last."""
    now = time.time() if now is None else now
    minutes = max(1, min(minutes, MINUTES))
    first = (int(now // 60) - minutes + 1) * 60
    days = sorted({int(first // 86400), int(now // 86400)})
    blobs = client.execute_command("MGET", *[f"{PREFIX}series:{account}:{day}" for day in days],
                                   **{NEVER_DECODE: []})  # bytes, whatever the client decodes
    raw: dict[int, bytes | None] = dict(zip(days, blobs, strict=True))
    series = Series(start=float(first))
    for i in range(minutes):
        at = first + 60 * i
        data = raw.get(int(at // 86400)) or b""
        record = int(at % 86400 // 60) * RECORD_BITS

        def value(bit: int, bits: int, data: bytes = data, record: int = record) -> int:
            start = record + bit
            chunk = data[start // 8:(start + bits) // 8]
            return int.from_bytes(chunk.ljust(bits // 8, b"\0"), "big") if chunk else 0

        series.delivered.append(value(*FIELDS["delivered"]))
        series.dead.append(value(*FIELDS["dead"]))
        series.throttled.append(value(*FIELDS["throttled"]))
        series.waiting.append(value(*FIELDS["waiting"]))
        series.latency.append([value(LATENCY_OFFSET + 16 * b, 16) for b in range(len(LATENCY_BOUNDS))])
    return series
