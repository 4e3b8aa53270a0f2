"""The wake-up signal: a ``BLPOP`` left outstanding on its own connection.

The worker's loop selects on this connection's socket together with the
zygote's pipe, so an idle instance blocks until Redis pushes to its wake list
(a task became due sooner, a cancel) or the ``BLPOP`` times out.

The connection comes from the client :func:`~perseid_jobs.store.connection.connect`
made, so it follows the deployment: on a cluster it is a connection to the node
that owns the wake key's slot; behind Sentinel, one to the current primary. A
``BLPOP`` whose reply is overdue (a network cut that left the socket silent) is
dropped and counts as a wake-up, so the worker looks for work instead of
sleeping on a dead socket.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.cluster import RedisCluster

# How long past its own timeout a BLPOP may stay unanswered before it is dropped.
_OVERDUE_S = 2.0


class WakeChannel:
    """One connection that carries at most one outstanding ``BLPOP``."""

    def __init__(self, client: redis.Redis) -> None:
        self._client: Any = client
        self._pool: Any = None
        self._conn: Any = None
        self._key: str | None = None
        self._overdue_at = 0.0

    def _pool_for(self, key: str) -> Any:
        if isinstance(self._client, RedisCluster):
            node = self._client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return node.redis_connection.connection_pool
        return self._client.connection_pool

    def arm(self, keys: list[str], timeout_s: float) -> bool:
        """Make sure a BLPOP on ``keys[0]`` (the only wake list of an instance of a namespace
        of one partition) is outstanding; False if Redis cannot be reached."""
        key = keys[0]
        if self._conn is not None and self._key == key:
            return True
        self.close()
        try:
            pool = self._pool_for(key)
            conn = pool.get_connection()
        except redis.RedisError:
            return False
        try:
            conn.send_command("BLPOP", key, f"{timeout_s:.3f}")
        except redis.RedisError:
            conn.disconnect()
            pool.release(conn)
            return False
        self._pool, self._conn, self._key = pool, conn, key
        self._overdue_at = time.monotonic() + timeout_s + _OVERDUE_S
        return True

    def fileno(self) -> int:
        """The socket to select on, or -1 when nothing is outstanding."""
        if self._conn is None or self._conn._sock is None:
            return -1
        return int(self._conn._sock.fileno())

    def overdue(self) -> bool:
        """True if the outstanding BLPOP should have answered by now (it is then dropped)."""
        if self._conn is None or time.monotonic() < self._overdue_at:
            return False
        self.close()
        return True

    def consume(self) -> bool:
        """Read the BLPOP reply after the socket became readable; True if woken or timed out.

        A connection error counts as a wake-up too: the worker's next call finds out
        whether Redis is back.
        """
        if self._conn is None:
            return False
        conn, pool = self._conn, self._pool
        try:
            conn.read_response()
        except (redis.RedisError, OSError):
            conn.disconnect()
        pool.release(conn)
        self._pool, self._conn, self._key = None, None, None
        return True

    def close(self) -> None:
        """Drop the outstanding BLPOP, if any."""
        if self._conn is not None:
            self._conn.disconnect()
            self._pool.release(self._conn)
            self._pool, self._conn, self._key = None, None, None
