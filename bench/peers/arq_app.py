"""arq: the coroutine job and the worker settings; ``python -m bench.peers.arq_app`` enqueues.

Worker: ``arq bench.peers.arq_app.WorkerSettings`` with ``max_jobs = 2``, other
settings left at their defaults. The 50 ms job awaits ``asyncio.sleep``, the
idiomatic wait in a coroutine (a blocking sleep would stall the event loop).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings

from bench.peers.bench_record import append_line, read_spec

REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))


async def work(ctx: dict[str, Any], out: str, due: float, sleep: float) -> None:
    """The benchmark job."""
    start = time.time()
    if sleep > 0:
        await asyncio.sleep(sleep)
    append_line(out, start, time.time(), due)


class WorkerSettings:
    """What ``arq`` reads: concurrency 2, everything else default."""

    functions: ClassVar[list[Any]] = [work]
    redis_settings = REDIS
    max_jobs = 2


async def enqueue() -> None:
    """Enqueue what the spec on stdin says."""
    spec = read_spec()
    pool = await create_pool(RedisSettings.from_dsn(spec.redis))
    dues = spec.dues()
    for i in range(0, len(dues), 100):
        await asyncio.gather(
            *(
                pool.enqueue_job(
                    "work",
                    spec.out,
                    due,
                    spec.sleep,
                    _defer_until=datetime.fromtimestamp(due, UTC) if due else None,
                )
                for due in dues[i : i + 100]
            )
        )
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(enqueue())
