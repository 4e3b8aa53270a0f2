"""A job started at most 10 times a second per group (group_rate="10/s")."""

from perseid_jobs import job


@job(max_duration="30s", group_rate="10/s")
def run(task):
    pass
