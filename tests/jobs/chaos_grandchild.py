"""For the bad-input tests: forks a grandchild that ignores SIGTERM, then outlives its max duration.

The grandchild writes its pid to ``args.pidfile`` once SIGTERM is ignored; the job
then sleeps past its 2 s limit. Both must be gone after the timeout.
"""

import subprocess
import sys
import time
from pathlib import Path

from perseid_jobs import job

GRANDCHILD = (
    "import os, pathlib, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
    "time.sleep(600)\n"
)


@job(max_duration="2s", slots=1)
def run(task):
    pidfile = Path(task.args["pidfile"])
    subprocess.Popen([sys.executable, "-c", GRANDCHILD, str(pidfile)])
    while not pidfile.exists():
        time.sleep(0.01)
    time.sleep(600)
