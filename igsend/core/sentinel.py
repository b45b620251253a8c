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

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # redis-py 8.1 reconnects here with connect_check_health(), which reuses the last host and port and skips
        # SentinelManagedConnection.connect(), the one step that asks the sentinels: a retried command would go
        # back to the demoted (or dead) primary until its retries ran out.
        if not self._sock:
            self.connect()
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # redis-py: untyped

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health)
        # Lua scripts live in each server's cache, which replication does not copy: a pipeline retried on the new
        # primary would get NOSCRIPT. Load the client's registered scripts on every new connection.
        for source in getattr(self.connection_pool, "igsend_scripts", ()):
            self.send_command("SCRIPT", "LOAD", source)
            super().read_response()

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

    def _connparams(self, asynchronous: bool = False) -> Any:
        # When the primary dies, Celery's consumer closes the broker connection, and closing this channel puts
        # its unacknowledged messages back, which needs a pool; kombu 5.7 then reads the connection's address
        # from a transport that has already let go of its client, and the AttributeError ends the worker
        # ("Unrecoverable error": ops/chaos --failover lost every message still queued when both workers died).
        # As a connection error it is ignored like the others; the messages come back with the next restore.
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]  # kombu: untyped


class SentinelTransport(kombu_redis.SentinelTransport):
    """Kombu's Sentinel transport (``sentinel://`` + ``master_name``) with :class:`PrimaryConnection`: without it,
    a NOREPLICAS from the old primary reaches Celery as a ResponseError, which stops the worker's consumer
    ("Unrecoverable error"); as a ConnectionError the consumer reconnects, through the sentinels."""

    Channel = _SentinelChannel


class SentinelRedis(redis.Redis):
    """The client :func:`igsend.core.store.redis_from_url` returns for ``sentinel://``: it remembers the scripts
    registered on it, which :class:`PrimaryConnection` loads into whichever primary it connects to."""

    def register_script(self, script: Any) -> Any:
        registered = super().register_script(script)
        # Connections see the pool's proxy (redis-py's SentinelConnectionPoolProxy) as their connection_pool.
        pool = self.connection_pool
        scripts = getattr(pool, "proxy", pool).__dict__.setdefault("igsend_scripts", [])
        if script not in scripts:
            scripts.append(script)
        return registered
