"""``python -m perseid_jobs`` is the ``perseid-jobs`` command."""

from .cli import main

main()
