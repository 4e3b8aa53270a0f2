"""Where the partitioned path's Redis time goes: calls per task and usec per call, by script.

    .venv/bin/python -m bench.cluster_profile [TASKS]

``INFO commandstats`` lumps every script into ``evalsha``, so this turns on the slow log
for every call (``slowlog-log-slower-than 0``) on each primary for the run's window and
names each EVALSHA by its script's SHA1. P = 1 on one Redis, then P = 12 on 3 primaries.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import redis

from bench.cluster_run import measure
from bench.systems import Perseid

NAMES = Perseid().script_names()


class SlowLog:
    """Every call's duration on the primaries, by command (scripts by name)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.usec: Counter[str] = Counter()

    def on(self, nodes: list[redis.Redis]) -> None:
        """Log every call from now on."""
        for c in nodes:
            c.config_set("slowlog-max-len", 2_000_000)
            c.config_set("slowlog-log-slower-than", 0)
            c.slowlog_reset()

    def read(self, nodes: list[redis.Redis]) -> None:
        """Count what was logged."""
        for c in nodes:
            c.config_set("slowlog-log-slower-than", 10_000)
            entries: list[dict[str, Any]] = c.slowlog_get(2_000_000)
            for e in entries:
                raw = e["command"]
                words = (raw.decode() if isinstance(raw, bytes) else str(raw)).split()
                name = words[0].upper() if words else "?"
                if name in ("EVALSHA", "EVAL") and len(words) > 1:
                    name = NAMES.get(words[1], words[1][:8])
                if name in ("CONFIG", "INFO", "SLOWLOG"):
                    continue
                self.calls[name] += 1
                self.usec[name] += int(e["duration"])


def report(label: str, log: SlowLog, n: int) -> str:
    """One markdown table: calls per task, usec per call, usec per task, by name."""
    lines = [f"\n{label}: {sum(log.calls.values()) / n:.2f} calls/task,"
             f" {sum(log.usec.values()) / n:.1f} us/task (slow log)\n",
             "| call | calls/task | us/call | us/task |", "| --- | --- | --- | --- |"]  # fmt: skip
    # Redis 7 logs the commands inside a script too (their time is in the script's own):
    # the scripts' rows are the ones to add up.
    for name, usec in log.usec.most_common():
        c = log.calls[name]
        lines.append(f"| {name} | {c / n:.3f} | {usec / c:.1f} | {usec / n:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """P = 1 on one Redis, then P = 12 on 3 primaries."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for primaries, label in ((1, "P=1, one Redis"), (3, "P=12, 3 primaries")):
        log = SlowLog()
        measure(primaries, n, hooks=(log.on, log.read))
        print(report(label, log, n))


if __name__ == "__main__":
    main()
