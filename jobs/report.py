# jobs/report.py — the job's name is the file stem
from perseid_jobs import job


@job(max_duration="10m", slots=4, retries=2, backoff="30s")
def run(task):
    since = task.metadata["lastCompletedAt"]  # the series' last completed run (datetime) or None
    team = task.args.get("team", "everyone")
    task.logger.info("report", extra={"team": team, "since": str(since), "attempt": task.attempt})
    print(f"report for {team}, covering since {since or 'the beginning'}")
