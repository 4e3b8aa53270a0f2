"""Celery: the app and its task; ``python -m bench.peers.celery_app`` enqueues.

Worker: ``celery -A bench.peers.celery_app worker -c 2`` (prefork pool, defaults).
The broker URL comes from ``BENCH_REDIS_URL``; there is no result backend.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from celery import Celery

from bench.peers.bench_record import read_spec, record
from bench.peers.bench_write import record_write

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))


@app.task(name="bench.work")
def work(out: str, due: float, sleep: float, write: str = "") -> None:
    """The benchmark job (``write``: the Redis URL it writes one record to, if any)."""
    if write:
        record_write(out, due, sleep, write)
    else:
        record(out, due, sleep)


def main() -> None:
    """Enqueue what the spec on stdin says (the broker URL comes from the environment)."""
    spec = read_spec()
    for due in spec.dues():
        eta = datetime.fromtimestamp(due, UTC) if due else None
        work.apply_async((spec.out, due, spec.sleep, spec.write), eta=eta)


if __name__ == "__main__":
    main()
