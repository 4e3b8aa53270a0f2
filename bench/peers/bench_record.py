"""What every benchmarked job runs, whatever the system, and the enqueue spec: stdlib only.

A job notes when its code started, when it ended and when it was due, as one
line appended to a marker file. The benchmark reads these lines instead of
asking each system for its results, so every system is timed the same way,
from the job's side.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def record(out: str, due: float, sleep: float) -> None:
    """Sleep ``sleep`` seconds (0: a no-op job), then append ``start end due`` to ``out``."""
    start = time.time()
    if sleep > 0:
        time.sleep(sleep)
    append_line(out, start, time.time(), due)


def append_line(out: str, start: float, end: float, due: float) -> None:
    """Append one marker line; one ``write`` on an O_APPEND file never interleaves."""
    fd = os.open(out, _FLAGS, 0o644)
    try:
        os.write(fd, b"%.6f %.6f %.6f\n" % (start, end, due))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EnqueueSpec:
    """What to enqueue: ``n`` jobs, due now (``lead`` None) or spread over ``span`` seconds.

    ``write``: a Redis URL each job writes one record to over its own client
    (:mod:`bench.peers.bench_write`); empty, the job only notes its times.
    """

    redis: str
    out: str
    n: int
    sleep: float = 0.0
    lead: float | None = None
    span: float = 0.0
    write: str = ""

    def dues(self) -> list[float]:
        """Each job's due time (epoch s, whole ms), or 0.0 for "now", from the time of the call.

        Due times are rounded to the millisecond, the resolution every system stores,
        so a start at the due millisecond never counts as early.
        """
        if self.lead is None:
            return [0.0] * self.n
        base = time.time() + self.lead
        step = self.span / self.n if self.n else 0.0
        return [round((base + i * step) * 1000) / 1000 for i in range(self.n)]

    def to_json(self) -> str:
        """The spec as the JSON an enqueuer reads on stdin."""
        return json.dumps(self.__dict__)


def read_spec() -> EnqueueSpec:
    """The spec an enqueuer was given on stdin."""
    return EnqueueSpec(**json.load(sys.stdin))
