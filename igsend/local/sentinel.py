"""A Redis primary, one replica and three sentinels on this machine, for the failover tests and ``ops/chaos
--failover`` (production runs them as the compose ``ha`` profile does).

The sentinels use short timeouts (a primary is down after 1 s, a failover may take 3 s) so a test sees a
failover within seconds. ``url`` is what igsend is given: ``sentinel://127.0.0.1:P1;...;sentinel://...:P3/0``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from igsend.local.embedded_redis import find_redis_server, free_port


@dataclass
class Server:
    """One redis-server (or sentinel) process this module started."""

    port: int
    process: subprocess.Popen[bytes]
    role: str
    args: list[str] = field(default_factory=list)

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout,
                           decode_responses=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no AOF flush, no goodbye to the replicas."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def _spawn(args: list[str], port: int, role: str, wait: float = 15.0) -> Server:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = Server(port, process, role, args)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{role} on port {port} exited with {process.returncode}")
        try:
            if server.client(0.5).ping():
                return server
        except (redis.RedisError, OSError):
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"{role} did not answer on port {port} within {wait:.0f} s")


@dataclass
class SentinelCluster:
    name: str
    directory: Path
    servers: list[Server] = field(default_factory=list)  # the primary and the replica (roles change)
    sentinels: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            try:
                address = sentinel.client().sentinel_get_master_addr_by_name(self.name)
            except (redis.RedisError, OSError):
                continue
            if address:
                return int(cast(tuple[str, int], address)[1])
        return None

    def server(self, port: int | None) -> Server:
        return next(s for s in self.servers if s.port == port)

    def primary(self) -> Server:
        return self.server(self.primary_port())

    def replicas(self) -> list[Server]:
        port = self.primary_port()
        return [s for s in self.servers if s.port != port]

    def failover(self, wait: float = 20.0) -> int:
        """``SENTINEL FAILOVER``: the replica becomes the primary. Returns the new primary's port once it takes
        writes."""
        old = self.primary_port()
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", self.name)
        return self.wait_for_new_primary(old, wait)

    def kill_primary(self, wait: float = 30.0) -> int:
        """SIGKILL the primary; returns the new primary's port once the sentinels promoted the replica."""
        old = self.primary_port()
        self.server(old).kill()
        return self.wait_for_new_primary(old, wait)

    def restart(self, server: Server) -> Server:
        """Start a stopped server again as a replica of the current primary (what a supervisor restarting it and
        the sentinels reconfiguring it come to); returns once the primary counts it as an online replica."""
        primary = self.primary_port()
        args = list(server.args)
        if "--replicaof" in args:
            del args[args.index("--replicaof"):args.index("--replicaof") + 3]
        fresh = _spawn([*args, "--replicaof", "127.0.0.1", str(primary)], server.port, "replica")
        self.servers[self.servers.index(server)] = fresh
        self.wait_ready()
        return fresh

    def wait_for_new_primary(self, old: int | None, wait: float) -> int:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old:
                try:
                    if self.server(port).client().info("replication")["role"] == "master":
                        return port
                except (redis.RedisError, OSError, StopIteration):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"no new primary within {wait:.0f} s (still {old})")

    def wait_ready(self, replicas: int | None = None, wait: float = 30.0) -> None:
        """Until every sentinel knows the primary, ``replicas`` replicas in sync (default: every running server
        but the primary) and the other sentinels."""
        if replicas is None:
            replicas = sum(1 for server in self.servers if server.alive()) - 1
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                states = [s.client().sentinel_master(self.name) for s in self.sentinels if s.alive()]
                primary = self.primary().client().info("replication")
                synced = sum(1 for key, value in primary.items()
                             if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")
                if synced >= replicas and all(int(cast(dict[str, Any], state)["num-slaves"]) >= replicas
                                              and int(cast(dict[str, Any], state)["num-other-sentinels"])
                                              >= len(states) - 1 for state in states):
                    return
            except (redis.RedisError, OSError, StopIteration):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the sentinels did not see {replicas} replica(s) within {wait:.0f} s")

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()


def start_cluster(directory: str | Path, *, name: str = "igsend", down_after_ms: int = 1000,
                  failover_timeout_ms: int = 3000, replicas: int = 2, min_replicas: int = 1) -> SentinelCluster:
    """Start a primary, ``replicas`` replicas of it and three sentinels watching it (quorum 2), on 127.0.0.1.

    ``min_replicas`` (``min-replicas-to-write``): a primary without that many replicas refuses writes. After
    ``SENTINEL FAILOVER`` the old primary keeps its role for ~10 s until the sentinels demote it; without this,
    what clients still connected to it write there is lost when it resyncs from the new primary. With one replica,
    though, the new primary has none until the sentinels demote the old one (~10 s without writes): hence two
    replicas by default, as in production, where one can fail over while the other keeps the primary writable."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("no redis-server on PATH")
    root = Path(directory).resolve()
    cluster = SentinelCluster(name, root)
    try:
        primary_port = None
        for index in range(1 + replicas):
            port = free_port()
            data = root / f"redis{index}"
            data.mkdir(parents=True, exist_ok=True)
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
                    "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
                    "--logfile", str(data / "redis.log"), "--daemonize", "no",
                    "--min-replicas-to-write", str(min_replicas), "--min-replicas-max-lag", "10"]
            if primary_port is not None:
                args += ["--replicaof", "127.0.0.1", str(primary_port)]
            cluster.servers.append(_spawn(args, port, "replica" if primary_port else "primary"))
            primary_port = primary_port or port
        for index in range(3):
            port = free_port()
            data = root / f"sentinel{index}"
            data.mkdir(parents=True, exist_ok=True)
            conf = data / "sentinel.conf"  # the sentinel rewrites it: one file each
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {data}\nlogfile {data / 'sentinel.log'}\n"
                            f"sentinel monitor {name} 127.0.0.1 {primary_port} 2\n"
                            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
                            f"sentinel parallel-syncs {name} 1\n")
            cluster.sentinels.append(_spawn([binary, str(conf), "--sentinel"], port, "sentinel"))
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster
