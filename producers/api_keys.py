"""API keys of the HTTP API and the console: what each key may do (scopes) and how fast (requests per second).

An ``IGSEND_API_KEYS`` entry is ``KEY`` (every scope) or ``KEY:scope+scope[@N]``: ``send`` queues messages,
``read`` polls jobs, ``operate`` works the DLQ (list, replay, purge), heals accounts, cancels messages and logs in
to the console; ``@N`` lets the key make at most N requests per second (429 with ``Retry-After`` beyond).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass

import redis

from igsend.core.errors import ConfigurationError
from igsend.core.settings import positive_number
from igsend.core.store import PREFIX

SEND, READ, OPERATE = "send", "read", "operate"
SCOPES = (SEND, READ, OPERATE)
#: What the characters of a key may be: anything printable but the separators of an entry (``,`` ``:`` ``@``)
#: and spaces, so an entry reads one way only.
_KEY = re.compile(r"[!-~]+")
_SEPARATORS = frozenset(",:@")


@dataclass(frozen=True)
class ApiKey:
    secret: bytes
    scopes: frozenset[str]
    #: requests per second, None for no limit
    rate: float | None = None

    @property
    def ident(self) -> str:
        """Names the key in Redis and logs without revealing it (a SHA-256 prefix)."""
        return hashlib.sha256(self.secret).hexdigest()[:16]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def parse_entry(entry: str) -> ApiKey:
    """One entry of IGSEND_API_KEYS; a bad one raises ConfigurationError naming it (the key masked) and the rule."""
    text, at, rate_text = entry.partition("@")
    key, colon, scope_text = text.partition(":")

    def bad(rule: str) -> ConfigurationError:
        shown = (key[:3] + "…" if len(key) > 3 else "…") + entry[len(key):]  # never the whole key in a log
        return ConfigurationError(f"IGSEND_API_KEYS: entry {shown!r}: {rule} (an entry is KEY or "
                                  f"KEY:scope+scope[@N], scopes {', '.join(SCOPES)})")

    if not key or not _KEY.fullmatch(key) or _SEPARATORS & set(key):
        raise bad("the key must be printable ASCII without spaces, ',', ':' or '@'")
    scopes = frozenset(SCOPES)
    if colon:
        named = scope_text.split("+")
        unknown = [name for name in named if name not in SCOPES]
        if unknown or not scope_text:
            raise bad(f"unknown scope {unknown[0] if unknown else ''!r}")
        scopes = frozenset(named)
    rate: float | None = None
    if at:
        rate = positive_number(rate_text)
        if rate is None:
            raise bad(f"@N must be a positive number of requests per second (got {rate_text!r})")
    return ApiKey(key.encode("utf-8"), scopes, rate)


def parse_keys(text: str) -> list[ApiKey]:
    """Every entry of a comma-separated IGSEND_API_KEYS value (blank entries skipped)."""
    keys = [parse_entry(entry.strip()) for entry in text.split(",") if entry.strip()]
    seen: set[bytes] = set()
    for key in keys:
        if key.secret in seen:
            raise ConfigurationError(f"IGSEND_API_KEYS: key {key.ident} (SHA-256 prefix) is listed twice: give "
                                     "each key once, with every scope it needs")
        seen.add(key.secret)
    return keys


def find_key(supplied: bytes, keys: list[ApiKey]) -> ApiKey | None:
    """The key whose secret equals ``supplied``, compared in constant time against every key, so the time taken
    does not tell which one matched."""
    found = None
    for key in keys:
        if hmac.compare_digest(supplied, key.secret):
            found = key
    return found


#: GCRA (generic cell rate algorithm) in one Lua script: a key's "theoretical arrival time" in one Redis string,
#: on Redis's clock. In Redis rather than in the process because `igsend api` runs several gunicorn processes (and
#: compose may run several API containers): a limit counted per process would let a key through N times over. A
#: small script on the project's own client rather than a library (Flask-Limiter / limits): it reuses the
#: connection igsend already configures (Sentinel, TLS, ACL users), which limits' storage URIs do not cover.
#: KEYS[1] the key's state; ARGV[1] milliseconds per request; ARGV[2] burst in milliseconds.
#: Returns 0 when allowed, else the milliseconds until the next request would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > burst then return math.ceil(tat - now - burst) end
local new = tat + interval
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + 1000)
return 0
"""


def rate_key(key: ApiKey) -> str:
    return f"{PREFIX}apirate:{key.ident}"


def gcra_wait(client: redis.Redis, state_key: str, *, per_second: float, burst: float) -> int:
    """0 when one more request counted under ``state_key`` fits ``per_second`` with a burst of ``burst``
    requests (and is counted), else the seconds to wait (at least 1) before the next one would."""
    interval = 1000.0 / per_second
    wait_ms = int(client.register_script(_GCRA)(keys=[state_key], args=[interval, (burst - 1) * interval]))
    return 0 if wait_ms <= 0 else max(1, math.ceil(wait_ms / 1000))


def retry_after(client: redis.Redis, key: ApiKey) -> int:
    """0 when the key may make this request now, else the seconds to wait (at least 1) before the next one. N
    requests/s allows a burst of N within one second, then one every 1/N s."""
    if key.rate is None:
        return 0
    return gcra_wait(client, rate_key(key), per_second=key.rate, burst=key.rate)


#: Console logins one client address may try: a burst of this many, then one every 60/N s. An operator logs in
#: rarely; someone guessing keys at /ui/login is slowed to a few tries a minute.
LOGINS_PER_MINUTE = 10


def login_wait(client: redis.Redis, address: str) -> int:
    """0 when ``address`` may try a console login now (the try is counted), else the seconds to wait."""
    state_key = f"{PREFIX}loginrate:{hashlib.sha256(address.encode()).hexdigest()[:16]}"
    return gcra_wait(client, state_key, per_second=LOGINS_PER_MINUTE / 60, burst=LOGINS_PER_MINUTE)
