"""The warm parent: imports every job once, then forks one process per task.

The worker spawns it as ``python -m perseid_jobs.launch.zygote`` with two pipes. It
loads the jobs directory, reports the job definitions, and then, for each
start request, forks a child that runs the task in a new session (its own
process group, so a kill reaches the job's own subprocesses too). It reaps
its children and reports each exit status with the reason the child gave.

It also owns each task's stdout and stderr: the pipes are made before the fork
and their read ends polled here, their lines written into the task's log file
(:class:`~perseid_jobs.logs.tasklog.TaskOutput`), so a task process starts no
thread for its output. A task's exit is reported only once its pipes are
drained, so the log is complete when the worker uploads it.

A task process never outlives its worker: the zygote asks the kernel for
SIGTERM when the worker dies (``PR_SET_PDEATHSIG``) and then kills every
task's process group; each child asks for SIGKILL when the zygote dies.

Nor does it outlive the worker's lease. The worker passes on each renewal's
conservative deadline (:class:`LeaseUntil`); if that deadline passes, because
the worker is stopped, hung, or cut off from Redis, the zygote kills every task
on its own, before any other instance could reap the tasks and run their series
on. And nothing of a task outlives the task: when its process ends, whatever is
left of its process group (a grandchild that ignored SIGTERM) is killed too,
while the ended leader still holds the group id.

This module is the process's entry; the loop is :mod:`perseid_jobs.launch.forkserver`, the
spare task process :mod:`perseid_jobs.launch.spare`.
"""

from __future__ import annotations

from . import forking, hugepages

if __name__ == "__main__":
    forking.record()  # before anything that registers a fork handler is imported (see forking)

import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..logs.tasklog import route_process
from .forkserver import WORKER_GONE, Zygote
from .protocol import Ready
from .taskproc import rehearse, set_parent_death_signal
from .warmup import load_warm


def main() -> None:
    """Entry: ``python -m perseid_jobs.launch.zygote REQ EVT JOBS_DIR WORKER_PID [SPARE_DIR [LK]]``.

    REQ, EVT: the fds of the request and event pipes. With SPARE_DIR, one task
    process is kept forked ahead of its start request
    (its log file waits in that directory). LK: the fd of the worker's spool
    lock, held until the zygote exits (see :mod:`perseid_jobs.logs.spool`).
    """
    req_fd, evt_fd, jobs_dir, worker_pid = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    spare_dir = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    os.set_inheritable(req_fd, False)
    os.set_inheritable(evt_fd, False)

    def on_worker_death(*_: Any) -> None:
        if os.getpid() != zygote.pid or zygote.ending:
            return  # in a task just forked (libc's fork keeps a pending signal), or ending
        zygote.ending = WORKER_GONE
        zygote.end_tasks(in_handler=True)
        os._exit(0)

    set_parent_death_signal(signal.SIGTERM)
    jobs, errors = load_warm(jobs_dir)  # imported, warmed up: before any fork
    zygote = Zygote(req_fd, evt_fd, jobs, spare_dir)
    zygote.lock_fd = int(sys.argv[6]) if len(sys.argv) > 6 else -1
    route_process()
    rehearse(jobs)  # warm what only task processes run, so that they do not (see rehearse)
    fork = forking.choose()
    # Everything loaded so far lives as long as the zygote: keep it out of the
    # collector, so a collection in a task does not write to (and so copy) the
    # pages of every object it inherited.
    gc.freeze()
    hugepages.collapse()  # fewer page-table entries for every fork to copy (see hugepages)
    signal.signal(signal.SIGTERM, on_worker_death)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which drains
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the worker's "reload the jobs" (or a hangup)
    if os.getppid() != worker_pid:
        return
    zygote.send(Ready(jobs={n: s.definition() for n, s in jobs.items()}, errors=errors, fork=fork))
    zygote.flush()
    zygote.serve()


if __name__ == "__main__":
    main()
