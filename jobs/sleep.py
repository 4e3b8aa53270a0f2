"""Sleeps args.seconds (default 1), in small steps so a cancel lands quickly."""

import time

from perseid_jobs import job


@job(max_duration="2m", slots=1)
def run(task):
    seconds = float(task.args.get("seconds", 1))
    task.logger.info("sleeping", extra={"seconds": seconds})
    time.sleep(seconds)
    task.logger.info("woke up")
