"""A zygote driven alone: ``python -m bench.zygote_alone [--tasks N] [--jobs DIR] [--job NAME]``.

No worker and no Redis: a zygote with its spare is sent N start requests of a
no-op job, two in flight (as a worker at ``--slots 2`` keeps it), and prints one
JSON line: starts per second, the zygote's and its reaped task processes' CPU
ms per task, and their minor page faults (copy-on-write copies, mostly) per
task, from ``/proc``. What a change to the zygote or the task process costs,
without the worker's and Redis's share and noise; run it alternating between
two checkouts (``PYTHONPATH``).

``--jobs``: the job files' directory (default: ``bench/jobs``, whose job file
imports redis-py as the benchmark's does); ``--job``: the job (its file's name).
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import tempfile
import time
from pathlib import Path

from bench.processes import cpu_seconds, minor_faults
from perseid_jobs.launch.protocol import Exited, StartRequest
from perseid_jobs.logs.spool import Spool
from perseid_jobs.worker.zygote_client import ZygoteClient

JOBS = Path(__file__).resolve().parent / "jobs"


def drive(jobs: Path, job: str, n: int, inflight: int = 2) -> dict[str, float]:
    """``n`` starts through a fresh zygote for ``jobs``; the rates and costs per task."""
    logs = Path(tempfile.mkdtemp(prefix="perseid-zygote-"))
    spool = Spool.create(logs)
    zygote = ZygoteClient(jobs, spool=spool)
    sent = done = 0
    args = json.dumps({"out": str(logs / "marks.txt")})  # the benchmark job's marker file

    def send() -> None:
        nonlocal sent
        task_id = f"01ZYGOTE{sent:018d}"
        path = spool.log_path(task_id)
        zygote.start(_request(task_id, job, path, args))
        sent += 1

    try:
        time.sleep(0.3)  # the spare forked, the zygote idle: count from here
        pid = zygote.proc.pid
        cpu0, tasks0 = cpu_seconds(pid), cpu_seconds(pid, children=True)
        faults0, task_faults0 = minor_faults(pid), minor_faults(pid, reaped_children=True)
        t0 = time.monotonic()
        for _ in range(min(inflight, n)):
            send()
        while done < n:
            select.select([zygote.fileno()], [], [], 1.0)
            for event in zygote.read_events():
                if isinstance(event, Exited):
                    if event.status != 0:
                        raise RuntimeError(f"task {event.id} failed: {event.reason}")
                    spool.log_path(event.id).unlink(missing_ok=True)
                    done += 1
                    if sent < n:
                        send()
        wall = time.monotonic() - t0
        cpu, tasks = cpu_seconds(pid) - cpu0, cpu_seconds(pid, children=True) - tasks0
        return {
            "starts_per_s": round(n / wall),
            "zygote_ms": round(cpu * 1000 / n, 3),
            "task_ms": round((tasks - cpu) * 1000 / n, 3),
            "zygote_faults": (minor_faults(pid) - faults0) // n,
            "task_faults": (minor_faults(pid, reaped_children=True) - task_faults0) // n,
        }
    finally:
        zygote.close()
        spool.close()
        shutil.rmtree(logs, ignore_errors=True)


def _request(task_id: str, job: str, log_path: Path, args: str) -> StartRequest:
    return StartRequest(
        id=task_id,
        job=job,
        args=args,
        attempt=1,
        started_at_ms=int(time.time() * 1000),
        last_completed_at="",
        skipped_runs="",
        log_path=str(log_path),
        max_log_bytes=1 << 20,
    )


def main() -> None:
    """Parse the options, drive, print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.zygote_alone")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--jobs", type=Path, default=JOBS)
    parser.add_argument("--job", default="bench_work")
    args = parser.parse_args()
    print(json.dumps(drive(args.jobs.resolve(), args.job, args.tasks)))


if __name__ == "__main__":
    main()
