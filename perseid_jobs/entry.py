"""The ``perseid-jobs`` console script: a worker's zygote first, then the command line.

Kept to what starting the zygote needs, so ``perseid-jobs worker`` has its
warm parent importing the jobs while this process imports the rest (see
:func:`perseid_jobs.worker.zygote_client.start_zygote_early`).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console script entry point."""
    if sys.argv[1:2] == ["worker"]:
        from .worker.zygote_client import start_zygote_early

        start_zygote_early(sys.argv[2:])
    from .cli.cli import main as cli_main

    cli_main()
