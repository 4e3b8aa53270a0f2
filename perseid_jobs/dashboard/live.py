"""Live updates: one reader of the events streams per dashboard process, fanned out.

A thread follows every partition's events stream with one blocking ``XREAD`` on a
connection of its own, and hands each entry to every subscriber's asyncio queue. So
however many pages are open, the dashboard costs Redis one reader (a test counts it
with ``CLIENT LIST``). On Redis Cluster the partitions' streams live in different
slots, which one ``XREAD`` cannot name: the thread then reads them in turn, each with
a short block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from ..store.connection import connect

log = logging.getLogger(__name__)

QUEUE_MAX = 1000
"""Events a slow page may lag behind; past it the page is told to reload (``overflow``)."""


class EventHub:
    """The one events reader of a dashboard process, and its subscribers."""

    def __init__(self, redis_url: str, stream_keys: list[str], block_ms: int = 1000) -> None:
        self.redis_url = redis_url
        self.stream_keys = stream_keys
        self.block_ms = block_ms
        self._subs: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events-hub", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.block_ms / 1000 + 2)

    def subscribe(self) -> asyncio.Queue[bytes]:
        """A queue that gets every event from now on, as the JSON of its fields."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MAX)
        with self._lock:
            self._subs.add((asyncio.get_running_loop(), queue))
        self.start()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        with self._lock:
            self._subs = {s for s in self._subs if s[1] is not queue}

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, fields: dict[str, Any]) -> None:
        """Hand one event to every subscriber (from the reader thread)."""
        data = orjson.dumps(fields)
        with self._lock:
            subs = list(self._subs)
        for loop, queue in subs:
            loop.call_soon_threadsafe(_offer, queue, data)

    def _run(self) -> None:
        conn: Any = None
        last = dict.fromkeys(self.stream_keys, "$")
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.redis_url, socket_timeout=self.block_ms / 1000 + 5)
                    # "$" is "from now on"; fixed to real ids at once so none is missed
                    # between two reads.
                    for key in self.stream_keys:
                        newest = conn.xrevrange(key, count=1)
                        if last[key] == "$":
                            last[key] = newest[0][0] if newest else "0-0"
                self._read(conn, last)
            except redis.RedisError as exc:
                log.warning("events reader: %s; reconnecting", exc)
                conn = None
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _read(self, conn: Any, last: dict[str, str]) -> None:
        if isinstance(conn, RedisCluster) and len(last) > 1:
            block = max(1, self.block_ms // len(last))
            replies: list[Any] = []
            for key, at in last.items():
                replies += conn.xread({key: at}, block=block) or []
        else:
            replies = conn.xread(dict(last), block=self.block_ms) or []
        for key, entries in replies:
            for entry_id, fields in entries:
                last[key] = entry_id
                self.publish({**fields, "stream_id": entry_id})


def _offer(queue: asyncio.Queue[bytes], data: bytes) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a page that stopped reading misses some
        queue.put_nowait(data)
