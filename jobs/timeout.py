"""Outlives its max duration of 2 s, with a child process that must die with it."""

import subprocess
import time

from perseid_jobs import job


@job(max_duration="2s", slots=1)
def run(task):
    child = subprocess.Popen(["sleep", "600"])
    task.logger.info("spawned", extra={"child_pid": child.pid})
    time.sleep(600)
