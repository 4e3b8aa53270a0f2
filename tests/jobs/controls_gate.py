"""Fails until the file named by args.path exists: a failure fixed outside, then retried."""

from pathlib import Path

from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    if not Path(task.args["path"]).exists():
        raise RuntimeError(f"not ready: {task.args['path']} is missing")
