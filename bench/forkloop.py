"""One fork launcher: ``python -m bench.forkloop N START [--warm]``; prints begin and end times.

It waits until the wall-clock ``START`` (so parallel launchers begin together),
then runs ``os.fork`` + ``os._exit(0)`` in the child + ``os.waitpid`` N times.
``--warm`` first imports what the task launcher (zygote) imports, to show what
its bigger address space costs each fork.
"""

from __future__ import annotations

import importlib
import os
import sys
import time


def fork_loop(n: int) -> None:
    """The bare fork cycle, ``n`` times."""
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


def main() -> None:
    """Parse argv, wait for the start time, fork, print when the loop began and ended."""
    n, start = int(sys.argv[1]), float(sys.argv[2])
    if "--warm" in sys.argv:
        importlib.import_module("perseid_jobs.launch.zygote")
    time.sleep(max(0.0, start - time.time()))
    begin = time.time()
    fork_loop(n)
    print(f"{begin:.6f} {time.time():.6f}")


if __name__ == "__main__":
    main()
