"""Writes to stdout and stderr in every way a job can; args.flood_bytes floods stdout."""

import os
import subprocess
import sys

from perseid_jobs import job


@job(max_duration="1m", slots=1)
def run(task):
    print("printed line")
    os.write(2, b"raw stderr bytes\n")
    subprocess.run(["sh", "-c", "echo from a subprocess"], check=True)
    task.logger.warning("structured", extra={"answer": 42})
    flood = int(task.args.get("flood_bytes", 0))
    chunk = "x" * 1023 + "\n"
    for _ in range(flood // 1024):
        sys.stdout.write(chunk)
    sys.stdout.flush()
