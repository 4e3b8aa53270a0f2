"""The client's warning that no live worker would take a task it schedules."""

from __future__ import annotations

import time
import warnings
import weakref

from ..store.script_io import Served
from ..store.scripts import decode
from .calls import Eval, Op
from .partitioned import Partitioned

QUIET_FOR_S = 5.0
"""After a check found nothing to warn of, the job is not checked again for this long.

So a loop of ``schedule`` calls pays the check's round trip once in a while,
not on every call (a schedule stays one script call after the definition's read).
"""

STACKLEVEL = 7
"""The caller of ``Client.schedule`` (or ``AsyncClient.schedule``) from a warning inside
``_submit``: through ``_schedule``, the driver (``run_sync`` or ``run_async``), the
client's ``_run`` and its ``schedule``."""

_quiet_until: weakref.WeakKeyDictionary[Partitioned, dict[str, float]] = weakref.WeakKeyDictionary()


class NotServedWarning(UserWarning):
    """Workers are live, but none offers the job: the task waits until one does.

    The usual cause: the job file is new and the workers have not loaded it yet
    (they do within ``--jobs-rescan``, or at once on SIGHUP), or they run with
    another ``--jobs`` directory.
    """


def warn_if_not_served(client: Partitioned, job: str) -> Op[None]:
    """Warn (:class:`NotServedWarning`) if live instances exist and none takes ``job``.

    With no live instance at all nothing is said: workers are often started
    after the tasks are scheduled.
    """
    quiet = _quiet_until.setdefault(client, {})
    now = time.monotonic()
    if quiet.get(job, 0.0) > now:
        return
    reply = decode((yield Eval((yield from client._first_keys()), "served", [job])), Served)
    live, serving = reply.live, reply.serving
    if not live or serving:
        quiet[job] = now + QUIET_FOR_S
        return
    quiet.pop(job, None)
    warnings.warn(
        f"no live worker serves job {job!r} (none of the {live} live instances offers it,"
        " or those that do are draining): the task waits until one does; a worker"
        " loads a new job file within its --jobs-rescan, or at once on SIGHUP",
        NotServedWarning,
        stacklevel=STACKLEVEL,
    )
