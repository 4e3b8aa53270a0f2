"""Does nothing: for throughput measurements."""

from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    pass
