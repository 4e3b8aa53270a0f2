"""The wake-up signal: a ``BLPOP`` left outstanding on its own connection.

The worker's loop selects on this connection's socket together with the
zygote's pipe, so an idle instance blocks until Redis pushes to its wake list
(a task became due sooner, a cancel) or the ``BLPOP`` times out.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger("perseid_jobs.worker")


class WakeChannel:
    """One connection that carries at most one outstanding ``BLPOP``."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5.0)
        self._conn: redis.connection.AbstractConnection | None = None
        self._key: str | None = None

    def arm(self, key: str, timeout_s: float) -> None:
        """Make sure a BLPOP on ``key`` is outstanding."""
        if self._conn is not None and self._key == key:
            return
        self.close()
        try:
            conn = self._client.connection_pool.get_connection()
            conn.send_command("BLPOP", key, f"{timeout_s:.3f}")
        except redis.RedisError as exc:
            log.warning("cannot wait for wake-ups: %s", exc)
            self.close()
            return
        self._conn, self._key = conn, key

    def fileno(self) -> int:
        """The socket to select on (a never-readable pipe-like -1 is avoided by callers)."""
        if self._conn is None or self._conn._sock is None:
            return -1
        return self._conn._sock.fileno()

    def consume(self) -> bool:
        """Read the BLPOP reply after the socket became readable; True if woken or timed out."""
        if self._conn is None:
            return False
        conn = self._conn
        try:
            conn.read_response()
        except redis.RedisError as exc:
            log.warning("wake-up connection failed: %s", exc)
            conn.disconnect()
        self._client.connection_pool.release(conn)
        self._conn, self._key = None, None
        return True

    def close(self) -> None:
        """Drop the outstanding BLPOP, if any."""
        if self._conn is not None:
            self._conn.disconnect()
            self._client.connection_pool.release(self._conn)
            self._conn, self._key = None, None
