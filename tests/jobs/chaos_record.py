"""For the chaos tests: records when this attempt ran, from inside the task's process.

Writes ``<args.dir>/<task id>.<attempt>.<pid>`` with a start line (monotonic ns, the
zygote's pid, which names the worker process) before sleeping ``args.seconds`` and an
end line after. A killed attempt has no end line.
"""

import os
import time
from pathlib import Path

from perseid_jobs import job


@job(max_duration="1m", slots=1)
def run(task):
    path = Path(task.args["dir"]) / f"{task.id}.{task.attempt}.{os.getpid()}"
    with path.open("a") as fh:
        fh.write(f"S {time.monotonic_ns()} {os.getppid()}\n")
    time.sleep(float(task.args.get("seconds", 0.05)))
    with path.open("a") as fh:
        fh.write(f"E {time.monotonic_ns()}\n")
