"""TCP peers that count the connections made to them: how a test tells "gave up after one attempt" from "retried
for a minute" by counting attempts, not by timing them (a busy machine stretches time, never the count)."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class CountingListener:
    """Listens on 127.0.0.1; ``close_at_once`` resets every connection the moment it is made (a Redis that
    drops its clients), otherwise connections are held open and never answered (a peer that never speaks)."""

    def __init__(self, *, close_at_once: bool) -> None:
        self.close_at_once = close_at_once
        self.connections = 0
        self._held: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._server.settimeout(0.2)
        self.url = f"redis://127.0.0.1:{self._server.getsockname()[1]}/0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.close_at_once:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                connection.close()  # linger 0: a reset, as a dropped connection looks to the client
            else:
                self._held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        for connection in self._held:
            connection.close()

    def __enter__(self) -> CountingListener:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
