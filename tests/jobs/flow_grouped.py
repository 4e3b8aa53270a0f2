"""A job with at most two running per group (group_concurrency=2); sleeps args.seconds."""

import time

from perseid_jobs import job


@job(max_duration="30s", group_concurrency=2)
def run(task):
    time.sleep(float(task.args.get("seconds", 0)))
