"""Fails on its first attempt, succeeds on the next: a job that opted into retries."""

from perseid_jobs import job


@job(max_duration="30s", slots=1, retries=2, backoff="0.2s")
def run(task):
    task.logger.info("attempt", extra={"attempt": task.attempt})
    if task.attempt < int(task.args.get("succeed_on", 2)):
        raise RuntimeError(f"attempt {task.attempt} fails")
