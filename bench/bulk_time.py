"""How long bulk retry and bulk cancel hold Redis, over N matching tasks (docs/controls.md).

On a private redis-server: N pending tasks of ``hello`` (made with the schedule script,
pipelined), then ``cancel_many`` (dry run, then for real) and ``retry_many`` of the
cancelled ones (dry run, for real, and again). For each: the bulk script calls, their
mean Redis time (``usec_per_call`` of ``cmdstat_evalsha`` after ``CONFIG RESETSTAT``),
the calls over 2 ms from ``SLOWLOG``, the client-timed p50/p99/max, and the wall time.
Then the tag index's ``MEMORY USAGE`` per entry.

    .venv/bin/python -m bench.bulk_time [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import ScheduleArgs
from perseid_jobs.store.scripts import Scripts

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SLOW_US = 2000


class Timed(Scripts):
    """The real scripts, timing each bulk call from the client."""

    times_ms: ClassVar[list[float]] = []

    def call(self, name: str, *args: Any, client: Any = None) -> Any:
        started = time.perf_counter()
        out = super().call(name, *args, client=client)
        if name == "bulk":
            self.times_ms.append((time.perf_counter() - started) * 1000)
        return out


def fill(c: Client, n: int) -> None:
    """``n`` pending tasks of ``hello``, each tagged ``batch=b1``, 1,000 per pipeline."""
    for start in range(0, n, 1000):
        pipe = c.redis.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            a = ScheduleArgs(job="hello", args=f'{{"n":{i}}}', slots=1, max_ms=30_000,
                             tags="batch=b1")  # fmt: skip
            c.scripts.call("schedule", *a.argv(), client=pipe)
        pipe.execute()


def measure(c: Client, label: str, action: Callable[[], int]) -> None:
    """Run ``action`` and print what it cost Redis."""
    r = c.redis
    Timed.times_ms.clear()
    r.config_resetstat()
    r.config_set("slowlog-log-slower-than", SLOW_US)
    r.slowlog_reset()
    started = time.monotonic()
    count = action()
    wall = time.monotonic() - started
    evalsha = r.info("commandstats").get("cmdstat_evalsha", {})
    slow = sorted((e["duration"] for e in r.slowlog_get(1000)), reverse=True)
    q = sorted(Timed.times_ms) or [0.0]
    p99 = q[min(len(q) - 1, int(0.99 * len(q)))]
    print(
        f"{label}: {count} in {wall:.1f}s; {len(Timed.times_ms)} bulk calls, Redis mean"
        f" {evalsha.get('usec_per_call', 0):.0f} us; client p50 {q[len(q) // 2]:.2f} ms p99"
        f" {p99:.2f} ms max {q[-1]:.2f} ms; commands over {SLOW_US} us: {slow[:5]}"
    )


def main(n: int) -> None:
    warnings.simplefilter("ignore")
    server = RedisServer(directory=Path(tempfile.mkdtemp(prefix="bulk-time-"))).start()
    try:
        c = Client.from_url(server.url, namespace="bench", jobs_dir=JOBS)
        c.partitions(record=True)
        c._scripts_by_tag[c.keys.tag] = Timed(c.redis, c.keys)
        fill(c, n)
        measure(c, "cancel_many dry run", lambda: c.cancel_many(job="hello", dry_run=True))
        measure(c, "cancel_many", lambda: c.cancel_many(job="hello"))
        again = {"job": "hello", "status": "cancelled"}
        measure(c, "retry_many dry run", lambda: c.retry_many(**again, dry_run=True))  # type: ignore[arg-type]
        measure(c, "retry_many", lambda: c.retry_many(**again))  # type: ignore[arg-type]
        measure(c, "retry_many again", lambda: c.retry_many(**again))  # type: ignore[arg-type]
        key = c.keys.tagged("batch=b1")
        size, entries = c.redis.memory_usage(key, samples=0), c.redis.zcard(key)
        print(f"tag index: {entries} entries, {size} bytes, {size / entries:.1f} per entry")
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
