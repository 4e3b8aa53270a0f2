"""A job whose runs never overlap over all workers (concurrency=1); sleeps args.seconds."""

import time

from perseid_jobs import job


@job(max_duration="30s", concurrency=1, retries=1, backoff="50ms")
def run(task):
    time.sleep(float(task.args.get("seconds", 0)))
    if task.args.get("hold_first") and task.attempt == 1:
        time.sleep(30)
    if task.args.get("fail_first") and task.attempt == 1:
        raise RuntimeError("first attempt fails")
