"""HTTP for status callbacks: no redirects, no proxies, and no loopback, private or link-local address unless the
endpoint allows it, checked on the socket actually connected, so a name that resolves to 127.0.0.1 (or is made to,
between a check and the connection) is refused too."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class RefusedAddress(Exception):  # noqa: N818 - what callers read: "RefusedAddress: … is 127.0.0.1 …"
    """The endpoint's name led to an address callbacks may not reach (loopback, private, link-local, …)."""


def reachable(address: str) -> bool:
    """Whether a callback may connect to ``address``: a public unicast address (not loopback, private, link-local,
    shared, reserved or multicast; an IPv4-mapped IPv6 address is judged as its IPv4 address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _Checked:
    host: str

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        peer = str(sock.getpeername()[0])
        if not reachable(peer):
            sock.close()
            raise RefusedAddress(f"{self.host} is {peer}: a loopback, private or link-local address (set "
                                 "allow_private = true for an endpoint on a private network)")
        return sock


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}


def session(*, allow_private: bool, pool: int = 16) -> requests.Session:
    """A session for one endpoint: proxies from the environment ignored, ``pool`` connections kept."""
    http = requests.Session()
    http.trust_env = False  # an HTTP(S)_PROXY would connect elsewhere than the address checked
    adapter = HTTPAdapter(pool_maxsize=pool) if allow_private else _CheckedAdapter(pool_maxsize=pool)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http
