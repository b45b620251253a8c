"""The chaos run behind ``ops/chaos``: send while workers are SIGKILLed and Redis restarts, then count.

    ops/chaos            # 2,000 messages, 3 accounts, 5 % transient errors, 40 ms latency, 3 kills, 1 restart
    ops/chaos --small    # 200 messages, 1 kill, 1 restart (what CI runs)
    ops/chaos --runs 10  # the full run ten times with different seeds, then one summary table
    ops/chaos --failover # Sentinel: 1,000 messages through sentinel:// (40 ms latency, 2 workers, a primary
                         # and 2 replicas), a forced SENTINEL FAILOVER and a SIGKILLed primary (started again
                         # as a replica, as a supervisor would) mid-run, each with replica acks 0 and 2
    ops/chaos --failover --small  # 200 messages, the forced failover with acks 2 only
    ops/chaos --failover --acks 1 # the same scenarios with IGSEND_REDIS_REPLICA_ACKS=1 (fewer than every replica)

Every fourth message belongs to an ordered conversation and every tenth is scheduled a few seconds ahead.
Reports accepted, delivered, dead by reason, lost (accepted but neither delivered nor dead nor unknown),
duplicates (the sandbox accepted the same message twice), unknown outcomes, lost answers the workers reconciled
by asking the Conversations API (IGSEND_UNKNOWN_OUTCOME=reconcile, the default: found at Meta, or sent again once),
ordered conversations that reached Meta out of order and scheduled messages sent before their time. Exit 0 when
lost == 0, duplicates == 0 (duplicates <= unknown under another IGSEND_UNKNOWN_OUTCOME), no conversation is out
of order and nothing was sent early.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from igsend.core.store import forget_connections  # noqa: E402
from igsend.local.embedded_redis import start_redis  # noqa: E402
from igsend.local.processes import Service, start_sandbox, start_worker  # noqa: E402


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(*, messages: int, kills: int, seed: int | None) -> dict:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="igsend-chaos-"))
    redis = start_redis(tmp / "redis")
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    os.environ["IGSEND_REDIS_URL"] = redis.url
    forget_connections()  # a second run's producer must talk to this run's Redis, not the last one's
    tokens = [f"chaos-token-{i}-{os.urandom(6).hex()}" for i in range(3)]
    sandbox = start_sandbox(tokens=tokens, latency_ms=40, error_rate=0.05, rate_limit=1000,
                            log_path=tmp / "sandbox.log")
    accounts = tmp / "accounts.toml"
    accounts.write_text("".join(f'[accounts.acct{i}]\nid = "1784140000001{i:04d}"\ntoken = "{t}"\n'
                                f"[accounts.acct{i}.limits]\ntext_per_second = 60\n\n" for i, t in enumerate(tokens)))
    policy = os.environ.get("IGSEND_UNKNOWN_OUTCOME") or "reconcile"
    env = {"IGSEND_REDIS_URL": redis.url, "IGSEND_GRAPH_URL": sandbox.url, "IGSEND_ACCOUNTS_FILE": str(accounts),
           "IGSEND_ACCESS_TOKEN": "", "IGSEND_RETRY_BASE": "0.5", "IGSEND_RETRY_CAP": "5",
           "IGSEND_UNKNOWN_OUTCOME": policy}
    worker_count = 0

    def new_worker() -> Service:
        nonlocal worker_count
        worker_count += 1
        return start_worker(env=env, log_path=tmp / f"worker{worker_count}.log", concurrency=16)

    workers = [new_worker(), new_worker()]

    accepted = []
    accepted_documents = []
    documents = mixed_documents(messages, rng)

    def produce() -> None:
        send_all(documents, accepted, accepted_documents, batch_size=50, retry_after=0.5, pause=0.05)

    started = time.monotonic()
    producer = threading.Thread(target=produce)
    producer.start()
    send_window = max(6.0, messages / 150)
    events = sorted([("kill", rng.uniform(1, send_window)) for _ in range(kills)]
                    + [("restart", rng.uniform(1, send_window))], key=lambda e: e[1])
    log(f"{messages} messages, {len(workers)} workers, events: "
        + ", ".join(f"{name}@{at:.1f}s" for name, at in events))
    try:
        for name, at in events:
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            if name == "kill":
                victim = rng.choice(workers)
                victim.kill()
                workers.remove(victim)
                log(f"SIGKILLed worker pid {victim.process.pid}")
                workers.append(new_worker())
                log("started a replacement worker")
            else:
                redis.stop()
                log("Redis stopped")
                time.sleep(1.0)
                redis = start_redis(tmp / "redis", port=port)
                log("Redis restarted (AOF replayed)")
        producer.join()
        log(f"all {len(accepted)} accepted; waiting for outcomes")
        statuses = wait_final(accepted, timeout=180)
        delivered_wire = requests.get(f"{sandbox.url}/_sandbox/messages", timeout=30).json()["messages"]
        from igsend.core.store import STATS_KEY, get_redis

        stats = get_redis().hgetall(STATS_KEY)
    finally:
        for service in [*workers, sandbox]:
            service.stop()
        redis.stop()

    report = summarize(accepted, accepted_documents, statuses, delivered_wire)
    report.update(check_order_and_time(accepted_documents, delivered_wire))
    report["republished_by_the_sweeper"] = int(stats.get("republished_total") or 0)
    report["unknown_outcome_policy"] = policy
    # Lost answers (a worker killed mid-POST, a connection cut) settled without an operator: found at Meta by the
    # Conversations API, or not there after the horizon and sent again once; "failed" ones ended unknown.
    report["reconciled"] = {name: int(stats.get(key) or 0) for name, key in (
        ("total", "reconciled_total"), ("delivered", "reconciled_delivered_total"),
        ("resent", "reconciled_resent_total"), ("failed", "reconcile_failed_total"),
        ("worker_killed_mid_post", "orphaned_total"))}
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    duplicates_ok = report["duplicates"] == 0 if policy == "reconcile" else report["duplicates"] <= report["unknown"]
    ok = (report["lost"] == 0 and duplicates_ok and len(accepted) == messages
          and report["ordered_out_of_order"] == 0 and report["scheduled_early"] == 0)
    print(f"target (lost 0, duplicates {'0' if policy == 'reconcile' else '<= unknown outcomes'}, ordered "
          "conversations in order, nothing scheduled sent early):", "MET" if ok else "MISSED")
    return {**report, "ok": ok}


def mixed_documents(messages: int, rng: random.Random) -> list[dict[str, Any]]:
    """Plain messages, with every fourth one in an ordered conversation of five and every tenth one scheduled a few
    seconds ahead (so they come due while workers die and Redis restarts)."""
    documents: list[dict[str, Any]] = []
    for i in range(messages):
        document: dict[str, Any] = {"kind": "text", "recipient": f"c{i}", "text": f"chaos message {i}",
                                    "account": f"acct{i % 3}"}
        if i % 4 == 1:
            conversation = (i // 4) // 5
            document.update(recipient=f"conv{conversation}", account=f"acct{conversation % 3}", ordered=True)
        elif i % 10 == 3:
            document["send_at"] = time.time() + rng.uniform(2, 12)
        documents.append(document)
    return documents


def check_order_and_time(documents: list[dict[str, Any]], delivered_wire: list[dict[str, Any]]) -> dict[str, int]:
    """Ordered conversations: what Meta received of each, in its order, must be in enqueue order (a dead or unknown
    message may be missing). Scheduled ones: none received before its send_at."""
    by_text = {document["text"]: (position, document) for position, document in enumerate(documents)}
    conversations: dict[str, list[int]] = {}
    early = 0
    for message in sorted(delivered_wire, key=lambda m: m["received_at"]):
        position, document = by_text.get(message["body"].get("message", {}).get("text"), (None, None))
        if document is None:
            continue
        if document.get("ordered"):
            conversations.setdefault(document["recipient"], []).append(position)
        if "send_at" in document and message["received_at"] < document["send_at"] - 0.01:
            early += 1
    out_of_order = sum(positions != sorted(positions) for positions in conversations.values())
    return {"ordered_conversations": len(conversations), "ordered_out_of_order": out_of_order,
            "scheduled": sum("send_at" in d for d in documents), "scheduled_early": early}


def send_all(documents: list[dict[str, Any]], accepted: list[Any], accepted_documents: list[dict[str, Any]], *,
             batch_size: int, retry_after: float, pause: float) -> int:
    """Queue every document in batches, as a busy app would; returns how many batches the broker refused.

    A refused batch (EnqueueError: Redis restarting or failing over, too few replicas) counted nothing as
    queued, so it is sent again."""
    from producers import EnqueueError, send_many

    refused = 0
    pending = list(documents)
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        while batch:
            try:
                # every position's job: with idempotency keys, one a refused call queued after all is answered
                # with its job instead of being queued again
                accepted.extend(send_many(batch).jobs)
                accepted_documents.extend(batch)
                batch = []
            except EnqueueError:
                refused += 1
                time.sleep(retry_after)
        time.sleep(pause)
    return refused


def wait_final(jobs, timeout: float) -> dict[str, tuple[str, str]]:
    from igsend.core import records
    from igsend.core.store import get_redis, job_key

    redis = get_redis()
    deadline = time.monotonic() + timeout
    while True:
        ids = [job.id for job in jobs]
        pipe = redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(job_key(job_id), "reason")
        reasons = pipe.execute()
        statuses = {job_id: ("missing" if s.value == "not_found" else s.value, r or "")
                    for job_id, s, r in zip(ids, records.statuses(redis, ids), reasons, strict=True)}
        if all(s in ("delivered", "dead", "unknown") for s, _ in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


FAILOVER_SCENARIOS = ("none", "failover", "kill-primary")  # none: the acks baseline


def run_failover(*, messages: int, scenario: str, acks: int, restart_killed: bool = True) -> dict[str, Any]:
    """Send ``messages`` through ``sentinel://`` (igsend.local.sentinel: a primary, two replicas, three
    sentinels) with 2 workers and 40 ms Graph latency; mid-send, ``SENTINEL FAILOVER`` (scenario ``failover``),
    SIGKILL of the primary (``kill-primary``; it stays down unless ``restart_killed``), or nothing (``none``:
    what acks cost in steady state). No transient Graph errors and generous rate limits: what goes wrong is
    the failover's doing, and msgs/s is igsend's and Redis's pace, not Meta's. With acks equal to every
    replica, ``kill-primary`` without ``restart_killed`` never ends: the producer is refused (NotReplicated)
    until the dead server is back."""
    from igsend.local.sentinel import start_cluster

    tmp = Path(tempfile.mkdtemp(prefix=f"igsend-chaos-{scenario}-{acks}-"))
    cluster = start_cluster(tmp / "sentinel", name="igsend")
    os.environ.update({"IGSEND_REDIS_URL": cluster.url, "IGSEND_REDIS_MASTER": "igsend",
                       "IGSEND_REDIS_REPLICA_ACKS": str(acks)})
    forget_connections()  # this run's producer talks to this run's cluster, with this run's acks
    tokens = [f"chaos-token-{i}-{os.urandom(6).hex()}" for i in range(3)]
    sandbox = start_sandbox(tokens=tokens, latency_ms=40, error_rate=0.0, rate_limit=100_000,
                            log_path=tmp / "sandbox.log")
    accounts = tmp / "accounts.toml"
    accounts.write_text("".join(f'[accounts.acct{i}]\nid = "1784140000001{i:04d}"\ntoken = "{t}"\n'
                                f"[accounts.acct{i}.limits]\ntext_per_second = 1000\n\n"
                                for i, t in enumerate(tokens)))
    env = {"IGSEND_REDIS_URL": cluster.url, "IGSEND_REDIS_MASTER": "igsend", "IGSEND_REDIS_REPLICA_ACKS": str(acks),
           "IGSEND_GRAPH_URL": sandbox.url, "IGSEND_ACCOUNTS_FILE": str(accounts), "IGSEND_ACCESS_TOKEN": "",
           "IGSEND_RETRY_BASE": "0.5", "IGSEND_RETRY_CAP": "5"}
    workers: list[Service] = []

    run_id = os.urandom(3).hex()
    # Idempotency keys, as docs/redis.md asks of an app behind Sentinel: a call refused with NotReplicated while the
    # primary fails over may still have queued its messages on the server promoted; sent again under the same
    # keys, they are answered with those jobs instead of being sent twice.
    documents = [{"kind": "text", "recipient": f"c{i}", "text": f"failover {run_id} {i}", "account": f"acct{i % 3}",
                  "idempotency_key": f"{run_id}-{i}"} for i in range(messages)]
    accepted: list[Any] = []
    accepted_documents: list[dict[str, str]] = []
    refused = 0

    def produce() -> None:
        nonlocal refused
        # With an event, a steady ~200 msgs/s, so it lands mid-send whatever acks cost; without one, as fast as
        # the producer goes (what acks cost).
        refused = send_all(documents, accepted, accepted_documents, batch_size=20, retry_after=0.2,
                           pause=0.02 if scenario == "none" else 0.1)

    try:
        workers = [start_worker(env=env, log_path=tmp / f"worker{n}.log", concurrency=16) for n in (1, 2)]
        started, started_wall = time.monotonic(), time.time()
        producer = threading.Thread(target=produce)
        producer.start()
        while len(accepted) < messages // 2 and producer.is_alive():
            time.sleep(0.01)
        event_at, accepted_at_event = time.monotonic() - started, len(accepted)
        if scenario != "none":
            old = cluster.primary_port()
            new = cluster.failover() if scenario == "failover" else cluster.kill_primary()
            if scenario == "kill-primary" and restart_killed:  # as a supervisor would: back, as a replica
                cluster.restart(cluster.server(old))
            log(f"{scenario} (acks {acks}) at {event_at:.1f}s after {accepted_at_event} accepted: primary {old} -> "
                f"{new} in {time.monotonic() - started - event_at:.1f}s")
        producer.join()
        statuses = wait_final(accepted, timeout=120)
        finished = time.monotonic() - started
        delivered_wire = requests.get(f"{sandbox.url}/_sandbox/messages", timeout=30).json()["messages"]
    finally:
        for service in [*workers, sandbox]:
            service.stop()
        cluster.stop()
    report = summarize(accepted, accepted_documents, statuses, delivered_wire)
    # the send phase: from the first enqueue to the last POST the sandbox accepted
    send_phase = max((m["received_at"] for m in delivered_wire), default=started_wall) - started_wall
    report.update({"scenario": scenario, "acks": acks, "refused_batches": refused, "seconds": round(finished, 1),
                   "send_phase_s": round(send_phase, 2),
                   "msgs_per_s": round(len(delivered_wire) / send_phase, 1) if send_phase > 0 else 0.0})
    print(json.dumps(report, indent=2))
    return report


def summarize(accepted: list[Any], accepted_documents: list[dict[str, str]],
              statuses: dict[str, tuple[str, str]], delivered_wire: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts from the final statuses and what the sandbox received: lost (accepted but no record or not final),
    duplicates (the same text received twice), unknown outcomes and how many of those reached Meta."""
    counts = Counter(s for s, _ in statuses.values())
    reasons = Counter(reason for s, reason in statuses.values() if s in ("dead", "unknown"))
    texts = Counter(m["body"].get("message", {}).get("text") for m in delivered_wire)
    duplicates = sum(n - 1 for n in texts.values() if n > 1)
    lost = len(accepted) - counts["delivered"] - counts["dead"] - counts["unknown"]
    text_of = {job.id: document["text"] for job, document in zip(accepted, accepted_documents, strict=True)}
    unknown_arrived = sum(1 for job_id, (s, _) in statuses.items() if s == "unknown" and texts[text_of[job_id]])
    return {"accepted": len(accepted), "delivered": counts["delivered"], "dead": counts["dead"],
            "unknown": counts["unknown"], "unknown_that_reached_meta": unknown_arrived, "lost": lost,
            "duplicates": duplicates,
            "not_final": {s: n for s, n in counts.items() if s not in ("delivered", "dead", "unknown")},
            "dead_or_unknown_by_reason": dict(reasons)}


def failover_table(reports: list[dict[str, Any]]) -> None:
    print(f"{'scenario':<13} {'acks':>4} {'accepted':>8} {'delivered':>9} {'lost':>5} {'dups':>5} {'unknown':>7} "
          f"{'dead':>5} {'msgs/s':>7}")
    for r in reports:
        print(f"{r['scenario']:<13} {r['acks']:>4} {r['accepted']:>8} {r['delivered']:>9} {r['lost']:>5} "
              f"{r['duplicates']:>5} {r['unknown']:>7} {r['dead']:>5} {r['msgs_per_s']:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="200 messages, 1 kill (CI)")
    parser.add_argument("--messages", type=int, default=None,
                        help="with --failover: messages per scenario (default 1,000; --small: 200)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--runs", type=int, default=1, help="repeat with seeds seed, seed+1, ... (default 1)")
    parser.add_argument("--failover", action="store_true",
                        help="Sentinel failover scenarios instead (1,000 messages; --small: 200, one scenario)")
    parser.add_argument("--scenarios", default=",".join(FAILOVER_SCENARIOS),
                        help="with --failover: which of " + ", ".join(FAILOVER_SCENARIOS) + " (comma-separated)")
    parser.add_argument("--leave-killed", action="store_true",
                        help="with --failover: leave the SIGKILLed primary down (default: started again as a replica "
                             "once the new primary is up, as a supervisor would; with acks = every replica, the run "
                             "then never ends: every WAIT falls one replica short)")
    parser.add_argument("--acks", default="0,2",
                        help="with --failover: IGSEND_REDIS_REPLICA_ACKS values to run, comma-separated (default 0,2)")
    args = parser.parse_args(argv)
    if args.failover:
        acks = [int(value) for value in args.acks.split(",")]
        plan = [("failover", 2)] if args.small else [(s, a) for s in args.scenarios.split(",") for a in acks]
        results = []
        for scenario, acks in plan:
            log(f"scenario {scenario}, IGSEND_REDIS_REPLICA_ACKS={acks}")
            results.append(run_failover(messages=args.messages or (200 if args.small else 1000), scenario=scenario,
                                        acks=acks,
                                        restart_killed=not args.leave_killed))
        failover_table(results)
        return 0 if all(r["lost"] == 0 and r["duplicates"] <= r["unknown"] for r in results) else 1
    size = {"messages": 200, "kills": 1} if args.small else {"messages": 2000, "kills": 3}
    base = args.seed if args.seed is not None else random.randrange(1_000_000)
    reports = []
    for index in range(args.runs):
        log(f"run {index + 1} of {args.runs} (seed {base + index})")
        reports.append(run(**size, seed=base + index))
    if args.runs > 1:
        print(f"{'run':>3} {'seed':>8} {'accepted':>8} {'delivered':>9} {'dead':>5} {'unknown':>7} "
              f"{'reached':>7} {'reconc.':>7} {'stuck':>5} {'dups':>5} {'republ.':>7} {'s':>6}")
        for index, r in enumerate(reports):
            print(f"{index + 1:>3} {base + index:>8} {r['accepted']:>8} {r['delivered']:>9} {r['dead']:>5} "
                  f"{r['unknown']:>7} {r['unknown_that_reached_meta']:>7} {r['reconciled']['total']:>7} "
                  f"{r['lost']:>5} {r['duplicates']:>5} {r['republished_by_the_sweeper']:>7} {r['seconds']:>6}")
        print("all runs: lost 0 and no duplicates:",
              "MET" if all(r["ok"] for r in reports) else "MISSED")
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
