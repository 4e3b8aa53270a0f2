"""Decides it has nothing to do and ends as cancelled (exit 100)."""

from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    task.logger.info("nothing to do; cancelling")
    task.cancel()
