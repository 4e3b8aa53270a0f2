"""The benchmark's job: note start, end and due time in a marker file (see bench_record).

With ``write`` in its arguments (a Redis URL) it first writes one record to
Redis over its own client (see bench_write): the connection scenarios.
"""

from bench.peers.bench_record import record
from bench.peers.bench_write import record_write
from perseid_jobs import job
from perseid_jobs.launch.runtime import TaskContext


@job(max_duration="60s", slots=1)
def run(task: TaskContext) -> None:
    """Record this task's start, end and due time (after writing its record, if asked)."""
    due, sleep = float(task.args.get("due", 0.0)), float(task.args.get("sleep", 0.0))
    if task.args.get("write"):
        record_write(task.args["out"], due, sleep, task.args["write"])
    else:
        record(task.args["out"], due, sleep)
