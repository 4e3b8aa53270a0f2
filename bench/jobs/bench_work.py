"""The benchmark's job: note start, end and due time in a marker file (see bench_record)."""

from bench.peers.bench_record import record
from perseid_jobs import job
from perseid_jobs.runtime import TaskContext


@job(max_duration="60s", slots=1)
def run(task: TaskContext) -> None:
    """Record this task's start, end and due time."""
    record(task.args["out"], float(task.args.get("due", 0.0)), float(task.args.get("sleep", 0.0)))
