"""`ops/bench fairness`: replies behind other traffic, FIFO (a raw Celery publish, igsend before lanes) vs lanes."""

from __future__ import annotations

import bisect
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ops.bench_common import percentile, stack, wire_latencies

REPLIES, EVERY = 30, 0.1  # each case's replies: 30, one every 0.1 s
IG_BUDGET = 100.0  # Meta's text budget for an Instagram-Login account (the sandbox and igsend enforce it)
VARIANTS = ("FIFO", "lanes")


@dataclass
class Figures:
    """One case in one variant: the replies' latencies (inf: not received in time), and A's share of its budget."""

    latencies: list[float]
    waited: float
    share: float = math.nan

    def cell(self, q: float) -> str:
        value = percentile(self.latencies, q)
        return f"{value:.2f}" if math.isfinite(value) else f">{self.waited:.0f}s"

    @property
    def missing(self) -> int:
        return sum(1 for latency in self.latencies if not math.isfinite(latency))


def ig_id(index: int) -> str:
    """The Instagram id ``bench_common.stack`` gives acct{index}: the sandbox's account key for its messages."""
    return f"1784140000000{index:04d}"


def texts(account: str, label: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"kind": "text", "recipient": f"{label}-{i}", "text": f"{label} {i}", "account": account, **extra}
            for i in range(count)]


def publish(documents: list[dict[str, Any]], lanes: bool) -> None:
    """Queue ``documents``: through igsend's producers (into the lanes), or as a raw Celery client does (FIFO onto
    the Celery list; ``ignore_result`` so that 20,000 publishes do not subscribe to 20,000 result channels)."""
    if lanes:
        from producers import send_many

        for start in range(0, len(documents), 1000):
            batch = send_many(documents[start:start + 1000])
            if batch.errors:
                raise RuntimeError(f"send_many refused: {next(iter(batch.errors.values()))}")
        return
    from igsend.core.celery_app import QUEUE, TASK_NAME, get_app

    app = get_app()
    with app.producer_or_acquire() as producer:
        for document in documents:
            app.send_task(TASK_NAME, args=[document], queue=QUEUE, producer=producer, ignore_result=True)


def replies(account: str, label: str, lanes: bool, count: int = REPLIES) -> dict[str, float]:
    """Send ``count`` texts one every 0.1 s (send_text, or a raw publish); their texts -> time just before each."""
    from producers import send_text

    sent_at: dict[str, float] = {}
    started = time.time()
    for i, document in enumerate(texts(account, label, count)):
        time.sleep(max(0.0, started + i * EVERY - time.time()))
        sent_at[document["text"]] = time.time()
        if lanes:
            send_text(document["recipient"], document["text"], account=account)
        else:
            publish([document], lanes=False)
    return sent_at


def received(sandbox: str, account_index: int) -> list[dict[str, Any]]:
    return requests.get(f"{sandbox}/_sandbox/messages", params={"account": ig_id(account_index)},
                        timeout=60).json()["messages"]


def wait_for(sandbox: str, account_index: int, sent_at: dict[str, float], timeout: float) -> Figures:
    """Wait (at most ``timeout`` s after the last send) for ``sent_at``'s messages; their latencies (bench_common
    ``wire_latencies``: the sandbox's acceptance plus its 100 ms answer, minus the time before the send call)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts_in = {(m["body"].get("message") or {}).get("text") for m in received(sandbox, account_index)}
        if texts_in >= sent_at.keys():
            break
        time.sleep(0.5)
    latencies, _, _ = wire_latencies(sandbox, sent_at)
    return Figures(latencies + [math.inf] * (len(sent_at) - len(latencies)), timeout)


def b_cases(lanes: bool, campaign: int, timeout: float) -> tuple[Figures, Figures]:
    """B (acct1) alone, then B behind A's (acct0) ``campaign`` texts; both Instagram Login, one fresh stack."""
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=2, budget=None, workers=1, latency_ms=100,
                                                     concurrency=None) as (_, sandbox, _names):
        alone = wait_for(sandbox, 1, replies("acct1", "B-alone", lanes), timeout=60)
        publish(texts("acct0", "A", campaign), lanes)
        sent_at = replies("acct1", "B-behind", lanes)
        behind = wait_for(sandbox, 1, sent_at, timeout)
        b_times = [m["received_at"] for m in received(sandbox, 1) if m["body"]["message"]["text"] in sent_at]
        start = min(sent_at.values())
        end = max(b_times) if behind.missing == 0 else time.time()
        a_count = sum(1 for m in received(sandbox, 0) if start <= m["received_at"] <= end)
        behind.share = a_count / (IG_BUDGET * (end - start))
    return alone, behind


def spread(times: dict[str, list[float]], total: int, start: float, end: float, width: float) -> float:
    """The highest max/min of per-account deliveries over ``width``-second windows from ``start`` to ``end``,
    among the accounts that still have backlog at the window's end (fewer than ``total`` delivered), while at
    least 2 do. NaN when no window had 2 such accounts."""
    worst, at = math.nan, start
    while at + width <= end:
        busy = [ts for ts in times.values() if bisect.bisect_right(ts, at + width) < total]
        if len(busy) < 2:
            break
        counts = [bisect.bisect_left(ts, at + width) - bisect.bisect_left(ts, at) for ts in busy]
        ratio = max(counts) / min(counts) if min(counts) else math.inf
        worst = ratio if math.isnan(worst) else max(worst, ratio)
        at += width
    return worst


def saturated(lanes: bool, accounts: int, per: int, width: float, watch: float, timeout: float
              ) -> tuple[float, Figures]:
    """``accounts`` Facebook-Login accounts' ``per`` texts queued one account after another, then (2 s later) an
    idle account's one reply: the spread of deliveries across the busy accounts, and the reply's latency."""
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=accounts + 1, budget=None, workers=1,
                                                     latency_ms=100, concurrency=None,
                                                     logins=["facebook"] * (accounts + 1)) as (_, sandbox, _names):
        for k in range(accounts):
            publish(texts(f"acct{k}", f"S{k}", per), lanes)
        queued = time.time()
        time.sleep(2)
        idle = wait_for(sandbox, accounts, replies(f"acct{accounts}", "idle", lanes, count=1), timeout)
        while time.time() < queued + watch:  # watch the busy accounts a while; their backlogs are not waited for
            if requests.get(f"{sandbox}/_sandbox/stats", timeout=10).json()["accepted"] > accounts * per:
                break
            time.sleep(0.5)
        end = time.time()
        messages = requests.get(f"{sandbox}/_sandbox/messages", timeout=120).json()["messages"]
    times = {ig_id(k): [] for k in range(accounts)}
    for message in messages:
        if message["account"] in times:
            times[message["account"]].append(message["received_at"])
    return spread({k: sorted(v) for k, v in times.items()}, per, queued, end, width), idle


def one_account(lanes: bool, before: list[dict[str, Any]], label: str) -> Figures:
    """acct0 (Instagram Login) has ``before`` queued, then sends 30 texts: their latencies."""
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), accounts=1, budget=None, workers=1, latency_ms=100,
                                                     concurrency=None) as (_, sandbox, _names):
        publish(before if lanes else [{k: v for k, v in d.items() if k != "priority"} for d in before], lanes)
        return wait_for(sandbox, 0, replies("acct0", label, lanes), timeout=180)


def bench_fairness(small: bool) -> int:
    """FIFO vs lanes, side by side: B's replies alone and behind A's campaign, saturated accounts, one account's
    bulk and private replies ahead of its texts. Figures are reported, not asserted; 1 if lanes lost B's replies."""
    campaign, k, m, width = (1_000, 5, 300, 2.0) if small else (20_000, 20, 2_000, 10.0)
    bulk, private = (300, 300) if small else (3_000, 3_000)
    timeout = 120.0 if small else 300.0
    watch = 8.0 if small else 45.0
    print(f"ops/bench fairness{' --small' if small else ''}: FIFO = a raw Celery publish (send_task, igsend's path "
          "before lanes), lanes = igsend's producers; each case in fresh stacks (Redis, sandbox at Meta's budgets, "
          "one worker of 64 threads), sandbox latency 100 ms; latencies in seconds, send call to Meta's answer; "
          f"saturated: {k} Facebook-Login accounts x {m:,} texts, the idle account's reply 2 s after", flush=True)
    behind_name = f"B behind A's {campaign:,}"
    names = ["B alone", behind_name, "idle account's reply", f"acct0: 30 normal after {bulk:,} bulk",
             f"acct0: 30 texts after {private:,} private replies"]
    rows: dict[str, dict[str, Figures]] = {name: {} for name in names}
    spreads: dict[str, float] = {}
    for variant in VARIANTS:
        lanes = variant == "lanes"
        rows[names[0]][variant], rows[names[1]][variant] = b_cases(lanes, campaign, timeout)
        spreads[variant], rows[names[2]][variant] = saturated(lanes, k, m, width, watch, timeout)
        rows[names[3]][variant] = one_account(lanes, texts("acct0", "bulk", bulk, priority="bulk"), "normal")
        rows[names[4]][variant] = one_account(lanes, [
            {"kind": "private_reply", "comment_id": f"c{i}", "text": "thanks", "account": "acct0"}
            for i in range(private)], "text")
        print(f"  {variant} done", flush=True)
    print(f"{'case':<44} {'FIFO p50':>9} {'FIFO p95':>9} {'lanes p50':>10} {'lanes p95':>10}   "
          "A share (FIFO / lanes)")
    for name, figures in rows.items():
        if name == names[2]:
            label = f"saturated: highest/lowest per {width:g} s window"
            print(f"{label:<44} {spreads['FIFO']:>9.2f} {'':>9} {spreads['lanes']:>10.2f}")
        fifo, lane = figures["FIFO"], figures["lanes"]
        share = f"   {fifo.share:.0%} / {lane.share:.0%}" if math.isfinite(fifo.share) else ""
        print(f"{name:<44} {fifo.cell(0.5):>9} {fifo.cell(0.95):>9} {lane.cell(0.5):>10} {lane.cell(0.95):>10}"
              f"{share}")
    if math.inf in spreads.values():
        print("note: saturated inf: in some window an account with backlog had no delivery at all")
    for name, figures in rows.items():
        for variant, fig in figures.items():
            if fig.missing:
                print(f"note: {variant}, {name}: {fig.missing}/{len(fig.latencies)} did not arrive within "
                      f"{fig.waited:.0f} s")
    fifo_p95, lanes_p95 = (percentile(rows[behind_name][v].latencies, 0.95) for v in VARIANTS)
    ratio = f"{fifo_p95 / lanes_p95:.1f}x" if math.isfinite(fifo_p95) else f"> {timeout / lanes_p95:.1f}x"
    print(f"p95 ratio FIFO/lanes, B behind A: {ratio}")
    return 1 if any(rows[name]["lanes"].missing for name in names[:2]) else 0
