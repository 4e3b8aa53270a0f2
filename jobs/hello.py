"""Logs a greeting with its arguments."""

from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    name = task.args.get("name", "world")
    since = task.metadata["lastCompletedAt"]
    task.logger.info("hello", extra={"who": name, "lastCompletedAt": str(since)})
    print(f"hello, {name}")
