"""RQ: the job is :func:`bench_record.record` (:func:`bench_write.record_write` for the
connection scenarios); ``python -m bench.peers.rq_app`` enqueues.

Workers: ``rq worker-pool -n 2`` (a fork per job; the pool runs RQ's scheduler,
which ``enqueue_at`` needs).
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis import Redis
from rq import Queue

from bench.peers.bench_record import read_spec, record
from bench.peers.bench_write import record_write


def main() -> None:
    """Enqueue what the spec on stdin says."""
    spec = read_spec()
    queue = Queue(connection=Redis.from_url(spec.redis))
    dues = spec.dues()
    if spec.lead is None:
        if spec.write:
            job = (record_write, (spec.out, 0.0, spec.sleep, spec.write))
        else:
            job = (record, (spec.out, 0.0, spec.sleep))
        datas = [Queue.prepare_data(*job) for _ in dues]
        for i in range(0, len(datas), 500):
            queue.enqueue_many(datas[i : i + 500])
        return
    for due in dues:
        queue.enqueue_at(datetime.fromtimestamp(due, UTC), record, spec.out, due, spec.sleep)


if __name__ == "__main__":
    main()
