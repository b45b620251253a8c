"""The Graph API client: one POST to ``/{version}/{account}/messages`` on a pooled ``requests.Session``.

Two rules keep a send from ever being made twice by the client itself:
- redirects are never followed (a 3xx comes back as an answer; requests would re-POST to the new place);
- every POST has a *total* deadline. ``requests`` only bounds each socket read, so an answer trickled a byte
  at a time could keep a POST open past the job's lock and the broker's visibility timeout, after which a
  second copy of the job would run. A watchdog thread shuts the socket of a POST that outlives its deadline.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from igsend.core import tracing
from workers.accounts import Account

#: Variables through which a deployment tells ``requests`` to verify HTTPS against its own CA bundle.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

CONNECT_TIMEOUT = 5.0
#: Default total deadline of one POST (the settings derive it per send class; see igsend.core.settings).
READ_TIMEOUT = 15.0


class SendDeadlineExceeded(requests.exceptions.ReadTimeout):
    """The POST was written but no complete answer came within its total deadline: the outcome is unknown."""


@dataclass(frozen=True)
class GraphResponse:
    status: int
    body: Any
    headers: dict[str, str]
    elapsed: float


class _Watch:
    """One POST under a deadline: the connection it went out on, and whether the deadline cut it."""

    __slots__ = ("conn", "done", "expired")

    def __init__(self) -> None:
        self.conn: HTTPConnection | None = None
        self.done = False
        self.expired = False


_current = threading.local()


def _bind(conn: HTTPConnection) -> None:
    """Tie a connection to the POST watched on this thread (pooled connections serve many POSTs in turn)."""
    watch = getattr(_current, "watch", None)
    conn._igsend_watch = watch  # type: ignore[attr-defined]
    if watch is not None:
        watch.conn = conn


class _WatchedConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _bind(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _bind(self)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Watchdog:
    """One thread for every deadline of the process (a timer thread per POST would cost more than the POST)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._count = 0
        self._thread: threading.Thread | None = None
        #: The deadline the thread sleeps until; None while it sleeps with nothing to watch.
        self._until: float | None = None

    def arm(self, watch: _Watch, deadline: float) -> None:
        with self._lock:
            self._count += 1
            heapq.heappush(self._heap, (deadline, self._count, watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="igsend-send-deadline", daemon=True)
                self._thread.start()
            # Wake the thread only for a deadline earlier than the one it sleeps until: POSTs share one deadline
            # length, so a new one is almost always later, and a wake-up per POST (a thread switch and the GIL
            # handed back and forth) cost more CPU than the rest of the watch.
            wake = self._until is None or deadline < self._until
        if wake:
            self._wake.set()

    def disarm(self, watch: _Watch) -> None:
        with self._lock:
            watch.done = True

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                due = self._heap[0][0] if self._heap else None
                now = time.monotonic()
                if due is not None and due <= now:
                    _, _, watch = heapq.heappop(self._heap)
                    self._expire(watch)
                    continue
                self._until = due
            self._wake.wait(None if due is None else due - now)
            self._wake.clear()

    @staticmethod
    def _expire(watch: _Watch) -> None:
        watch.expired = True
        conn = watch.conn
        sock = getattr(conn, "sock", None)
        if sock is None or getattr(conn, "_igsend_watch", None) is not watch:
            return
        try:
            # socket.socket.shutdown, not SSLSocket.shutdown: the reader's SSL object must stay in place so
            # that it fails with a clean error instead of a crash.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


_watchdog = _Watchdog()


def environment_proxies() -> bool:
    """Whether this process's environment sets a proxy for ``requests`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, either case). Then the Graph client reads the environment on every POST as ``requests`` does
    by default (``NO_PROXY`` included); otherwise it does not (``Session.trust_env = False``): every POST would
    look up proxies, the proxy bypass list, ``~/.netrc`` and the CA-bundle variables again, ~0.2 ms of CPU per
    POST for an answer that cannot change (docs/benchmarks.md)."""
    return any(address and scheme != "no" for scheme, address in urllib.request.getproxies().items())


def environment_ca_bundle() -> str | None:
    """The CA bundle the environment names for ``requests`` (``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``)."""
    return next((os.environ[name] for name in CA_BUNDLE_VARIABLES if os.environ.get(name)), None)


class GraphClient:
    """Sends message bodies as the account's login kind documents them, token in the Authorization header.

    Instagram Login: JSON body (the Instagram Login pages' examples). Facebook Login: the seed's form fields
    (``recipient``, ``message``/``sender_action``, ``payload`` as JSON strings). The token never goes in the
    URL, where proxies and access logs would keep it.
    """

    def __init__(self, *, pool_size: int = 10, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        self.connect_timeout = connect_timeout
        self.deadline = read_timeout
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        # Decided once here rather than looked up on every POST; a deployment that routes through a proxy keeps
        # requests' behaviour (NO_PROXY included). Otherwise ~/.netrc is not read either: requests would let its
        # credentials replace the token's Authorization header.
        self.session.trust_env = environment_proxies()
        bundle = environment_ca_bundle()
        if bundle and not self.session.trust_env:
            self.session.verify = bundle  # what requests would have read from the environment on each POST
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._adapter = adapter
        #: account name -> (url, Authorization header, query) and the POST prepared for them (_prepared)
        self._templates: dict[str, tuple[tuple[str, str, tuple[tuple[str, str], ...]],
                                         requests.PreparedRequest]] = {}

    def send(self, account: Account, body: dict[str, Any], *, deadline: float | None = None) -> GraphResponse:
        """POST one message within ``deadline`` seconds in all (default: the client's).

        Raises ``requests.RequestException`` when no HTTP answer arrives (:class:`SendDeadlineExceeded` when
        the deadline cut it). A redirect is returned as it is, never followed."""
        if account.login == "facebook":
            payload: dict[str, Any] = {"data": {key: value if isinstance(value, str) else
                                                json.dumps(value, ensure_ascii=False)
                                                for key, value in body.items()}}
        else:
            payload = {"json": body}
        if not tracing.on():
            return self._post(account, account.messages_url, deadline, payload, fast=True)
        with tracing.span("igsend.graph.post", attributes={"igsend.account": account.name,
                                                           "http.request.method": "POST"}) as current:
            try:
                response = self._post(account, account.messages_url, deadline, payload, fast=True)
            except requests.RequestException as exc:
                tracing.failed(current, f"no answer: {type(exc).__name__}")
                raise
            current.set_attribute("http.response.status_code", response.status)
            error = response.body.get("error") if isinstance(response.body, dict) else None
            if isinstance(error, dict):
                for name, key in (("graph.code", "code"), ("graph.subcode", "error_subcode"),
                                  ("graph.fbtrace_id", "fbtrace_id")):
                    if isinstance(error.get(key), int | str):
                        current.set_attribute(name, error[key])
                tracing.failed(current, f"Graph error {error.get('code')}")
            return response

    def upload(self, account: Account, media_type: str, data: bytes, *, filename: str, content_type: str,
               deadline: float | None = None) -> GraphResponse:
        """Upload a file once through Meta's attachment endpoint (``POST /{PAGE-ID}/message_attachments``,
        ``platform=instagram``, multipart ``filedata``; Facebook Login), reusable: the answer's ``attachment_id``
        sends it any number of times."""
        message = {"attachment": {"type": media_type, "payload": {"is_reusable": True}}}
        payload = {"data": {"message": json.dumps(message), "platform": "instagram"},
                   "files": {"filedata": (filename, data, content_type)}}
        return self._post(account, account.attachments_url, deadline, payload)

    def get(self, account: Account, path: str, params: dict[str, str], *, deadline: float) -> GraphResponse:
        """``GET {graph_url}/{version}/{path}`` as the account (the Conversations API: workers/reconcile.py), under
        the same rules as a POST: no redirects, a total deadline. Raises ``requests.RequestException`` when no
        HTTP answer arrives."""
        url = f"{account.graph_url.rstrip('/')}/{account.api_version}/{path}"
        return self._post(account, url, deadline, {"params": params}, method="GET")

    def _post(self, account: Account, url: str, deadline: float | None, payload: dict[str, Any], *,
              method: str = "POST", fast: bool = False) -> GraphResponse:
        total = deadline or self.deadline
        timeout = (min(self.connect_timeout, total), total)
        headers = {"Authorization": f"Bearer {account.token}"}
        params: dict[str, str] = payload.pop("params", {})
        proof = account.appsecret_proof()
        if proof:
            params["appsecret_proof"] = proof
        watch = _Watch()
        _current.watch = watch
        started = time.monotonic()
        _watchdog.arm(watch, started + total)
        try:
            if fast and not self.session.trust_env:
                prepared = self._prepared(account, url, headers, params)
                prepared.prepare_body(payload.get("data"), None, payload.get("json"))
                verify = True if self.session.verify is None else self.session.verify  # None chose nothing: verify
                response = self._adapter.send(prepared, timeout=timeout, verify=verify, cert=self.session.cert,
                                              proxies={})
            else:
                response = self.session.request(method, url, params=params, headers=headers, timeout=timeout,
                                                allow_redirects=False, **payload)
        except requests.RequestException:
            if watch.expired:
                raise SendDeadlineExceeded(f"no complete answer within the send deadline ({total:g} s)") from None
            raise
        finally:
            _watchdog.disarm(watch)
            _current.watch = None
        elapsed = time.monotonic() - started
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return GraphResponse(response.status_code, answer, dict(response.headers), elapsed)

    def _prepared(self, account: Account, url: str, headers: dict[str, str],
                  params: dict[str, str]) -> requests.PreparedRequest:
        """A message POST to ``url`` as ``account``, without its body: a copy of the one prepared for its current
        token. Session.request would prepare the URL, merge the session's headers, cookies and hooks and look up
        the environment on every POST, about a tenth of a worker's CPU per message (docs/performance.md); all of
        it is the same for every message of an account and token. The session's cookie jar is never sent: Graph
        API sets none that a send needs, and one account's would go out with another's messages."""
        key = (url, headers["Authorization"], tuple(sorted(params.items())))
        found = self._templates.get(account.name)
        if found is None or found[0] != key:
            request = requests.Request("POST", url, headers={**self.session.headers, **headers}, params=params)
            found = (key, request.prepare())
            self._templates[account.name] = found
        return found[1].copy()
