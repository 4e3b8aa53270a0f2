"""For the reused-process tests: writes lines naming its own task on every channel.

It also leaves behind what a careless job might (a quieter task logger, a
replaced ``sys.stdout``, a metadata key, a SIGTERM handler), so that the next
task in the same process shows whether the runtime put each back.
"""

import io
import logging
import os
import signal
import sys

from perseid_jobs import job


@job(max_duration="30s", max_tasks_per_process=50)
def run(task):
    if "mine" in task.metadata or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        raise RuntimeError("the previous task's metadata or SIGTERM handler is still here")
    for n in range(int(task.args.get("lines", 3))):
        print(f"out {task.id} {n}")
        print(f"err {task.id} {n}", file=sys.stderr)
        os.write(1, f"raw {task.id} {n}\n".encode())
        task.logger.info("log %s %d", task.id, n)
    # Not ended by a newline: the next task's first line must not complete it.
    sys.stdout.write(f"tail {task.id}")
    task.metadata["mine"] = task.id
    task.logger.setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: None)
    sys.stdout = io.StringIO()
