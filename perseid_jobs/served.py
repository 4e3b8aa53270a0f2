"""The client's warning that no live worker would take a task it schedules."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client


class NotServedWarning(UserWarning):
    """Workers are live, but none offers the job: the task waits until one does.

    The usual cause: the job file is new and the workers have not loaded it yet
    (they do within ``--jobs-rescan``, or at once on SIGHUP), or they run with
    another ``--jobs`` directory.
    """


def warn_if_not_served(client: Client, job: str) -> None:
    """Warn (:class:`NotServedWarning`) if live instances exist and none takes ``job``.

    With no live instance at all nothing is said: workers are often started
    after the tasks are scheduled.
    """
    _, live, serving = client.scripts.call("served", job)
    if live and not serving:
        warnings.warn(
            f"no live worker serves job {job!r} (none of the {live} live instances offers it,"
            " or those that do are draining): the task waits until one does; a worker"
            " loads a new job file within its --jobs-rescan, or at once on SIGHUP",
            NotServedWarning,
            stacklevel=3,
        )
