"""The tasks a worker runs: the one owner of its running tasks and of the slots they take.

The slot total is derived from the tasks each time it is asked for, so no path
that adds or drops a task can leave it wrong. The set also knows which exits
are its own: a task Redis no longer gives the instance is dropped as a *ghost*
(killed, its pid remembered) and its exit is then ignored, and an exit whose
pid is not the task's (a reused process that took the next task) is not that
task's end.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

from ..core.models import TaskStatus
from .outcome import Running


class RunningSet:
    """The worker's running tasks by id, and the pids of ghosts whose exit is not reported."""

    def __init__(self) -> None:
        self._runs: dict[str, Running] = {}
        self._ghosts: set[int] = set()

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._runs

    def __iter__(self) -> Iterator[Running]:
        """The running tasks (a copy: callers may drop tasks while they go through them)."""
        return iter(list(self._runs.values()))

    def ids(self) -> set[str]:
        """The ids of the running tasks."""
        return set(self._runs)

    def get(self, task_id: str) -> Running | None:
        """The running task ``task_id``, if it runs here."""
        return self._runs.get(task_id)

    @property
    def slots(self) -> int:
        """The slots the running tasks take, summed now.

        Read by the metrics thread too: ``list()`` of the values runs in C while the
        interpreter lock is held, so it never sees the dict change size under it.
        """
        return sum(run.slots for run in list(self._runs.values()))

    def free(self, total: int) -> int:
        """Slots left of ``total`` (may be below 0 after a fence: the old id's tasks still end)."""
        return total - self.slots

    # -- a task's life ---------------------------------------------------------------------
    def add(self, run: Running) -> None:
        """A task handed to the zygote."""
        self._runs[run.task.id] = run

    def started(self, task_id: str, pid: int) -> None:
        """The zygote says ``task_id``'s process is ``pid`` (the first report counts)."""
        run = self._runs.get(task_id)
        if run is not None and run.pid is None:
            run.pid = pid

    def ended(self, task_id: str, pid: int) -> Running | None:
        """Process ``pid`` of ``task_id`` exited: the run it ended, or None if none of ours.

        None for a ghost's exit, a task not running here, and a pid that is not the
        task's (its process was reused and the exit is of an earlier task).
        """
        if pid in self._ghosts:
            self._ghosts.discard(pid)
            return None
        run = self._runs.get(task_id)
        if run is None or (run.pid is not None and run.pid != pid):
            return None
        del self._runs[task_id]
        return run

    def cancel(self, ids: set[str], grace_s: float) -> None:
        """Stop the tasks a user cancelled (SIGTERM, SIGKILL after ``grace_s``).

        Those done leave ``ids`` (changed in place: the heartbeat's thread adds to it);
        a task whose pid is not known yet stays, to be stopped once it is.
        """
        for task_id in list(ids):
            run = self._runs.get(task_id)
            if run is not None and run.pid is not None:
                run.stop(TaskStatus.CANCELLED, "cancelled by user", grace_s)
                ids.discard(task_id)
            elif run is None:
                ids.discard(task_id)

    # -- what reconcile, fence and drain do -----------------------------------------------
    def not_held(self, held: set[str], instance: str) -> list[str]:
        """Tasks run under ``instance`` that Redis no longer gives it (``held``): ghosts to be.

        Only those whose pid is known: one not started yet cannot be killed, and the
        next reconcile sees it again.
        """
        return [
            task_id
            for task_id, run in self._runs.items()
            if task_id not in held and run.instance == instance and run.pid is not None
        ]

    def drop_ghost(self, task_id: str) -> Running:
        """Drop ``task_id`` unreported: SIGKILL it; its exit will be ignored."""
        run = self._runs.pop(task_id)
        run.kill(signal.SIGKILL)
        if run.pid is not None:
            self._ghosts.add(run.pid)
        return run

    def kill_all(self, reason: str) -> None:
        """SIGKILL every task; each is reported failed with ``reason`` when its exit comes."""
        for run in self._runs.values():
            run.forced = (TaskStatus.FAILED, reason)
            run.kill(signal.SIGKILL)

    def give_up(self) -> list[Running]:
        """Drop every task whose exit never came (a drain that ran out of time)."""
        runs, self._runs = list(self._runs.values()), {}
        return runs

    # -- deadlines -------------------------------------------------------------------------
    def kill_due(self, now: float) -> bool:
        """True if a task is to be signalled now (its max duration or its grace passed)."""
        return any(run.kill_due(now) for run in self._runs.values())

    def enforce_deadlines(self, now: float, grace_s: float) -> None:
        """Time out tasks past their max duration; SIGKILL those past their grace."""
        for run in list(self._runs.values()):
            run.enforce_deadline(now, grace_s)

    def wake_times(self) -> list[float]:
        """When a task is to be signalled next (``time.monotonic()`` seconds)."""
        when = []
        for run in self._runs.values():
            if run.kill_at is not None:
                when.append(run.kill_at)
            elif run.forced is None:
                when.append(run.deadline_mono)  # else: killed, its exit is awaited
        return when
