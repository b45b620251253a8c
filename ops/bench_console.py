"""`ops/bench console`: the console's dead-letter pages over a large DLQ."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from igsend.core.store import forget_connections
from igsend.local.embedded_redis import start_redis


def bench_console(entries: int, groups: bool = False) -> int:
    """The console's dead-letter list over a DLQ of ``entries``: the first page, filtered pages and a deep page,
    each rendered by the app as a browser would get it (login, session cookie), median of 5. With ``groups``, two
    Redis groups (IGSEND_GROUPS): ``alpha`` holds 20 dead letters, ``beta`` the ``entries``, so the first page
    crosses from one group into the other and the deep page is deep in ``beta``."""
    import re
    import statistics

    from igsend.core import records
    from igsend.core.store import get_redis
    from producers.api import create_app

    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        other = start_redis(Path(tmp) / "redis-alpha") if groups else None
        prefix = "beta." if groups else ""
        try:
            os.environ["IGSEND_REDIS_URL"] = redis.url
            if other is not None:
                groups_file = Path(tmp) / "groups.toml"
                groups_file.write_text(f'[groups.alpha]\nredis_url = "{other.url}"\naccounts = ["a"]\n'
                                       f'[groups.beta]\nredis_url = "{redis.url}"\naccounts = ["b"]\n')
                os.environ["IGSEND_GROUPS"] = str(groups_file)
            os.environ["IGSEND_UI_SECRET"] = "bench-console-secret-0123456789"
            forget_connections()
            client = get_redis()
            started = time.time()
            pipe = client.pipeline(transaction=False)
            for i in range(entries):
                code, subcode, klass = [(100, 2018001, "permanent"), (10, 2534022, "permanent"),
                                        (190, 463, "account_broken"), (1, 1357046, "unknown")][i % 4]
                error = {"code": code, "subcode": subcode, "message": "refused by Meta", "fbtrace_id": f"T{i}",
                         "http_status": 400, "class": klass}
                attempt = {"attempt": 1, "at": started - entries + i, "outcome": klass, "http_status": 400,
                           "code": code, "subcode": subcode, "message": "refused by Meta", "fbtrace_id": f"T{i}"}
                account = "rare" if i % 1000 == 7 else f"account{i % 10}"
                record = {"id": f"{prefix}job-{i:06d}", "account": account, "recipient": f"r{i}", "kind": "text",
                          "status": "dead", "message": {"kind": "text", "recipient": f"r{i}", "text": "x" * 200,
                                                        "account": account}}
                records._file_dead_letter(pipe, records._dead_letter(record, [attempt], f"{klass}: refused",
                                                                     error, started - entries + i))
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
            if other is not None:  # a few in the first group, so that the first page goes on into the second
                alpha = get_redis(other.url)
                for i in range(20):
                    record = {"id": f"alpha.job-{i:06d}", "account": "a", "recipient": f"r{i}", "kind": "text",
                              "status": "dead", "message": {"kind": "text", "recipient": f"r{i}", "text": "x",
                                                            "account": "a"}}
                    apipe = alpha.pipeline(transaction=False)
                    records._file_dead_letter(apipe, records._dead_letter(record, [], "permanent: refused", None,
                                                                          started + i))
                    apipe.execute()
            mode = " --groups" if groups else ""
            print(f"ops/bench console{mode}: {entries:,} dead letters filed in {time.time() - started:.1f} s "
                  f"(Redis {client.info('memory')['used_memory_human']})")
            key = "bench-operator-key"
            web = create_app(api_keys=[key]).test_client()
            token = re.search(rb'name="csrf_token" value="([^"]+)"', web.get("/ui/login").data)
            assert token
            web.post("/ui/login", data={"api_key": key, "csrf_token": token.group(1).decode()})
            pages = [("first page", "/ui/dead-letters"),
                     ("filtered: account (1 in 10)", "/ui/dead-letters?account=account3"),
                     ("filtered: code + reason", "/ui/dead-letters?code=190&reason=account_broken"),
                     ("filtered: rare account (1 in 1,000)", "/ui/dead-letters?account=rare"),
                     ("filtered: older than 1 h", "/ui/dead-letters?age=1h"),
                     (f"deep page (from #{entries - 10_000:,})",
                      f"/ui/dead-letters?start={'beta:' if groups else ''}{entries - 10_000}"),
                     ("one entry", f"/ui/dead-letters/{prefix}job-050000")]
            if groups:
                pages.append(("one group: beta", "/ui/dead-letters?group=beta"))
            print(f"{'page':40} {'median ms':>10} {'max ms':>8} {'rows':>5}")
            worst = 0.0
            for name, path in pages:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    answer = web.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code)
                rows = answer.data.count(b'name="job_id"')
                worst = max(worst, max(times))
                print(f"{name:40} {statistics.median(times):10.1f} {max(times):8.1f} {rows:5}")
            print(f"slowest page: {worst:.0f} ms (target: under 1,000 ms a page)")
            return 0 if worst < 1000 else 1
        finally:
            redis.stop()
            if other is not None:
                other.stop()
                os.environ.pop("IGSEND_GROUPS", None)
