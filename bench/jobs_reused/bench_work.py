"""The benchmark's job in perseid-jobs' reused mode: one task process serves up to 100 tasks.

The same body as ``bench/jobs/bench_work.py``; only the decorator differs. Should this
file fail to load, the benchmark reports the reused variant as not available, with why.
"""

from bench.peers.bench_record import record
from bench.peers.bench_write import record_write
from perseid_jobs import job
from perseid_jobs.launch.runtime import TaskContext

TASKS_PER_PROCESS = 100


@job(max_duration="60s", slots=1, max_tasks_per_process=TASKS_PER_PROCESS)
def run(task: TaskContext) -> None:
    """Record this task's start, end and due time (after writing its record, if asked)."""
    due, sleep = float(task.args.get("due", 0.0)), float(task.args.get("sleep", 0.0))
    if task.args.get("write"):
        record_write(task.args["out"], due, sleep, task.args["write"])
    else:
        record(task.args["out"], due, sleep)
