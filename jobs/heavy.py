"""A task that takes half of a 1024-slot instance; sleeps args.seconds (default 1)."""

import time

from perseid_jobs import job


@job(max_duration="1m", slots=512)
def run(task):
    time.sleep(float(task.args.get("seconds", 1)))
