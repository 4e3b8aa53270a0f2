"""``python -m perseid_jobs`` is the ``perseid-jobs`` command."""

from .entry import main

main()
