"""A job started at most 20 times a second over all workers (rate="20/s")."""

from perseid_jobs import job


@job(max_duration="30s", rate="20/s")
def run(task):
    pass
