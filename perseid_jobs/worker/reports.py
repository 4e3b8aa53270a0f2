"""What a worker has to report: the one owner of outcomes not yet recorded in Redis.

An outcome waits here until a finish call's reply came back; a call that
failed puts back what it took. The last outcomes reported are remembered too:
a failover may lose a report, and the reconcile that finds such a task still
running under this instance reports it again instead of starting it again.
"""

from __future__ import annotations

from collections import OrderedDict

from .outcome import Outcome

REPORTED_MEMORY = 4096
"""Outcomes remembered, to report again if a failover lost them."""

RunKey = tuple[str, str, str]  # see outcome.run_key


class Reports:
    """Outcomes to report, each with the instance id its task ran under."""

    def __init__(self, memory: int = REPORTED_MEMORY) -> None:
        self._pending: list[tuple[str, Outcome]] = []
        self._reported: OrderedDict[RunKey, tuple[str, Outcome]] = OrderedDict()
        self._memory = memory

    def __len__(self) -> int:
        return len(self._pending)

    def queue(self, instance: str, outcome: Outcome, run: RunKey | None = None) -> None:
        """Report ``outcome`` (of a task run under ``instance``); remembered by ``run``."""
        self._pending.append((instance, outcome))
        if run is not None:
            self._reported[run] = (instance, outcome)
            while len(self._reported) > self._memory:
                self._reported.popitem(last=False)

    def again(self, run: RunKey) -> bool:
        """Queue the remembered outcome of ``run`` again; False if none is remembered."""
        earlier = self._reported.get(run)
        if earlier is not None:
            self._pending.append(earlier)
        return earlier is not None

    def ids_of(self, instance: str) -> set[str]:
        """The tasks of ``instance`` whose outcome waits to be reported."""
        return {o.id for i, o in self._pending if i == instance}

    def token_of(self, task_id: str) -> str | None:
        """The fencing token of a task whose outcome waits to be reported (None if none)."""
        return next((o.token for _, o in self._pending if o.id == task_id), None)

    def take(self) -> list[tuple[str, Outcome]]:
        """Every outcome waiting, for a call; :meth:`put_back` what it did not record."""
        taken, self._pending = self._pending, []
        return taken

    def put_back(self, left: list[tuple[str, Outcome]]) -> None:
        """Outcomes a failed call took: first in line again, before those queued since."""
        self._pending = left + self._pending
