"""Always fails, with the message from args.message."""

from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    raise ValueError(task.args.get("message", "this job always fails"))
