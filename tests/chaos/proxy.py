"""A TCP proxy in front of Redis that can lose replies: the fault redis-py cannot see coming.

``drop_replies(seconds)``: for that long, requests still reach Redis (scripts run)
but every reply is thrown away and the connection is cut, as when a network fails
between a command and its answer. ``cut()`` / ``mend()``: a network partition (every
connection dropped, new ones refused) until mended.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class LossyProxy:
    """Forwards 127.0.0.1:<port> to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._drop_until = 0.0
        self._closed = False
        self._cut = False
        self.dropped = 0  # replies thrown away
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_replies(self, seconds: float) -> None:
        """Lose every reply for ``seconds``."""
        self._drop_until = time.monotonic() + seconds

    def cut(self) -> None:
        """Partition: drop every connection and refuse new ones until :meth:`mend`."""
        self._cut = True

    def mend(self) -> None:
        """End the partition."""
        self._cut = False

    def close(self) -> None:
        """Stop accepting; existing pairs end when either side closes."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                if self._closed or self._cut:
                    return
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is upstream:
                        if time.monotonic() < self._drop_until:
                            self.dropped += 1
                            return  # the request ran; its reply is lost with the connection
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()
