"""For the reused-process tests: writes lines naming its own task on every channel."""

import os
import sys

from perseid_jobs import job


@job(max_duration="30s", max_tasks_per_process=50)
def run(task):
    for n in range(int(task.args.get("lines", 3))):
        print(f"out {task.id} {n}")
        print(f"err {task.id} {n}", file=sys.stderr)
        os.write(1, f"raw {task.id} {n}\n".encode())
        task.logger.info("log %s %d", task.id, n)
    # Not ended by a newline: the next task's first line must not complete it.
    sys.stdout.write(f"tail {task.id}")
    task.metadata["mine"] = task.id
