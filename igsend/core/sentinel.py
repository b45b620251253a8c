"""Connections to a Redis primary named by Sentinel, for igsend's own client (``igsend.core.store``) and for
Celery's broker (kombu's Sentinel transport), so that both leave a demoted primary the same way."""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis.sentinel import SentinelManagedConnection


class PrimaryConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, which reconnects through the sentinels when a demoted primary
    answers READONLY, and here also on NOREPLICAS: after ``SENTINEL FAILOVER`` the old primary keeps serving
    for ~10 s until the sentinels demote it, and with ``min-replicas-to-write`` it refuses every write as soon as
    its replica left; the next connection asks the sentinels, who name the new primary."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if "NOREPLICAS" not in str(exc) or not self.connection_pool.is_master:
                raise
            self.disconnect()
            raise redis.ConnectionError(f"the primary refused the write ({exc}); asking the sentinels again") \
                from exc


class _SentinelChannel(kombu_redis.SentinelChannel):
    connection_class = PrimaryConnection


class SentinelTransport(kombu_redis.SentinelTransport):
    """Kombu's Sentinel transport (``sentinel://`` + ``master_name``) with :class:`PrimaryConnection`: without it,
    a NOREPLICAS from the old primary reaches Celery as a ResponseError, which stops the worker's consumer
    ("Unrecoverable error"); as a ConnectionError the consumer reconnects, through the sentinels."""

    Channel = _SentinelChannel
