"""The per-account circuit breaker: one error repeated across recipients means the account, not the people.

Some account-wide setup errors arrive as message-looking codes (100 "Unsupported request - method type: post"
when a token meets the wrong host, 100 "Invalid appsecret_proof", 10/200-299 when a permission was removed).
Alone, each dead-letters its message. When the *same* suspect error (``Verdict.suspect``) hits ``threshold``
messages to different recipients of one account within ``window`` seconds, with no delivery in between, the
breaker trips: the account is held as for a broken token, and the jobs it counted come back out of the DLQ
into the held set, so ``igsend accounts heal`` sends them all once the setup is fixed.
"""

from __future__ import annotations

import redis

from igsend.core.store import PREFIX

# KEYS: state hash, recipients hash. ARGV: signature, recipient, job id, window ms, threshold.
# Returns the counted job ids when the breaker trips (and forgets them), else an empty list.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
if redis.call('HGET', KEYS[1], 'sig') ~= ARGV[1] or now - since > tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'sig', ARGV[1], 'since', now)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
  local jobs = redis.call('HVALS', KEYS[2])
  redis.call('DEL', KEYS[1], KEYS[2])
  return jobs
end
return {}
"""


def state_key(account: str) -> str:
    return f"{PREFIX}breaker:{account}"


def recipients_key(account: str) -> str:
    return f"{PREFIX}breaker:{account}:recipients"


class Breaker:
    """Counts suspect errors per account.

    Keyword options: ``threshold`` (default 5) different recipients failing with the same error, within
    ``window`` seconds (default 60), trip it. A delivery for the account resets the count (``reset_keys``)."""

    def __init__(self, client: redis.Redis, *, threshold: int = 5, window: float = 60.0):
        self.client = client
        self.threshold = threshold
        self.window_ms = int(window * 1000)
        self.script = client.register_script(_COUNT)

    def count(self, account: str, signature: str, recipient: str, job_id: str) -> list[str]:
        """Count one failure; return the job ids to hold when this one trips the breaker, else []."""
        return list(self.script(keys=[state_key(account), recipients_key(account)],
                                args=[signature, recipient, job_id, self.window_ms, self.threshold]))


def reset_keys(account: str) -> list[str]:
    """What a delivery deletes: any success proves the account's setup works."""
    return [state_key(account), recipients_key(account)]
