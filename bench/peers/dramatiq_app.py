"""Dramatiq: the broker and the actor; ``python -m bench.peers.dramatiq_app`` enqueues.

Worker: ``dramatiq bench.peers.dramatiq_app --processes 2 --threads 1``
(concurrency 2, one thread in each of two long-lived processes).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.bench_record import read_spec, record

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_work")
def work(out: str, due: float, sleep: float) -> None:
    """The benchmark job."""
    record(out, due, sleep)


def main() -> None:
    """Enqueue what the spec on stdin says (the broker URL comes from the environment)."""
    spec = read_spec()
    for due in spec.dues():
        delay = max(0, int((due - time.time()) * 1000)) if due else None
        work.send_with_options(args=(spec.out, due, spec.sleep), delay=delay)


if __name__ == "__main__":
    main()
