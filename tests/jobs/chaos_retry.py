"""For the chaos tests: like chaos_record, but retried (up to 3 more attempts) when it fails.

Writes ``<args.dir>/<task id>.<attempt>.<pid>``: a start line (monotonic ns, the
zygote's pid), a tick line every few milliseconds while it sleeps ``args.seconds``,
and an end line. A killed attempt has no end line; its last tick bounds when it
was last alive, so a later attempt that started before that tick overlapped it.
"""

import os
import time
from pathlib import Path

from perseid_jobs import job


@job(max_duration="1m", slots=1, retries=3, backoff="50ms")
def run(task):
    path = Path(task.args["dir"]) / f"{task.id}.{task.attempt}.{os.getpid()}"
    with path.open("a", buffering=1) as fh:
        fh.write(f"S {time.monotonic_ns()} {os.getppid()}\n")
        until = time.monotonic() + float(task.args.get("seconds", 0.05))
        while time.monotonic() < until:
            time.sleep(0.005)
            fh.write(f"T {time.monotonic_ns()}\n")
        fh.write(f"E {time.monotonic_ns()}\n")
