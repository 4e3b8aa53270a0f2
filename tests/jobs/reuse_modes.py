"""For the reused-process tests: ends its task the way ``args.mode`` says."""

import os
import sys
import time

from perseid_jobs import job


@job(max_duration="2s", max_tasks_per_process=50)
def run(task):
    mode = task.args["mode"]
    print(f"mode {mode} in {os.getpid()}")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "cancel":
        task.cancel()
    if mode.startswith("exit"):
        sys.exit(int(mode[4:]))
    if mode == "_exit3":
        os._exit(3)
    if mode == "hang":
        time.sleep(60)
