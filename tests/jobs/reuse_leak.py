"""For the reused-process tests: each task keeps 40 MB more in a module global."""

from perseid_jobs import job

KEPT = []


@job(max_duration="30s", max_tasks_per_process=50, max_memory_per_process="150MB")
def run(task):
    KEPT.append(b"x" * (40 * 10**6))  # written, so resident
