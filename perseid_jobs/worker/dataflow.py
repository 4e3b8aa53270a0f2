"""The worker's side of a task's data (docs/dataflow.md): the progress its tasks report,
written to Redis, and the results of a dependent's parents, read before it starts.

Progress comes from the zygote already coalesced by each task (at most one value per
``launch.dataflow.PROGRESS_EVERY_S``); here the values that came since the loop last
talked to Redis are written in one call per partition, the newest per task, before any
finish in the same turn (so a task's last value lands while it is still running).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fanout import PartitionedScripts
    from .outcome import ClaimedTask
    from .worker import Worker


class DataFlow:
    """Progress to write, the last written of each running task (for the metrics), and the
    parents' results of the tasks just claimed."""

    def __init__(self, max_result_bytes: int) -> None:
        self.max_result_bytes = max_result_bytes
        self.pending: dict[str, tuple[float, str]] = {}  # task id -> newest unwritten value
        self.latest: dict[str, float] = {}  # task id -> last value, while it runs
        self.inputs: dict[str, str] = {}  # task id -> its parents' results, until it starts
        self.read: set[str] = set()  # the claimed tasks whose parents' results were read

    def read_inputs(self, scripts: PartitionedScripts, tasks: list[ClaimedTask]) -> None:
        """Read the parents' results of the tasks a claim just gave, in one go."""
        self.inputs = parent_results(scripts, tasks)
        self.read = {t.id for t in tasks}

    def start_data(self, scripts: PartitionedScripts, task: ClaimedTask) -> tuple[int, str]:
        """What a start request carries of the task's data: the cap of its result, and its
        parents' results (JSON, "" for none)."""
        if task.id not in self.read:  # adopted (its claim's reply was lost): read it alone
            return self.max_result_bytes, parent_results(scripts, [task]).get(task.id, "")
        self.read.discard(task.id)
        return self.max_result_bytes, self.inputs.pop(task.id, "")

    def write(self, w: Worker) -> None:
        """Write the progress the zygotes passed on since the last call, before any finish of
        the loop's turn (a Redis error keeps it for the next try)."""
        scripts, running, metrics = w.scripts, w.running, w.metrics
        for zygote in w.jobs.zygotes(w.zygote):
            for event in zygote.take_progress():
                self.pending[event.id] = (event.fraction, event.message or "")
        items, jobs = [], {}
        for task_id, (fraction, message) in self.pending.items():
            run = running.get(task_id)
            # A task whose exit came with its last progress is no longer running here but
            # still is in Redis until its outcome is reported (below, after this write).
            token = run.task.attempt if run is not None else w.reports.token_of(task_id)
            if token is not None:
                items.append((task_id, token, fraction, message))
                jobs[task_id] = run.task.job if run is not None else ""
        if items:
            scripts.progress(items)
        for task_id, _, fraction, _ in items:
            if task_id in running:
                self.latest[task_id] = fraction
            if metrics and jobs[task_id]:
                metrics.progressed(jobs[task_id])
        self.pending.clear()
        for task_id in [t for t in self.latest if t not in running]:
            del self.latest[task_id]


def parent_results(scripts: PartitionedScripts, tasks: Iterable[ClaimedTask]) -> dict[str, str]:
    """The parents' results of each claimed task that has parents: task id -> a JSON object
    (parent id -> its result, null for none), in one pipelined read of the parents, in
    whatever partitions they live (a parent in another partition is read there; it ended,
    so its result no longer changes). A claim's record names the parents; an adopted task's
    are read from its hash first."""
    tasks = list(tasks)
    unknown = [t for t in tasks if t.parents is None]
    named = {t.id: t.parents or "" for t in tasks if t.parents is not None}
    keys_of, client = scripts.each, scripts.client
    if unknown:
        pipe = client.pipeline(transaction=False)
        for t in unknown:
            pipe.hmget(keys_of[scripts.index_of(t.id)].keys.task(t.id), ["start_after", "parents"])
        for t, (after, parents) in zip(unknown, pipe.execute(), strict=True):
            named[t.id] = parents or after or ""
    wanted = {tid: ids for tid, text in named.items() if (ids := [p for p in text.split(",") if p])}
    if not wanted:
        return {}
    pipe = client.pipeline(transaction=False)
    order = [(tid, p) for tid, ids in wanted.items() for p in ids]
    for _, parent in order:
        pipe.hget(keys_of[scripts.index_of(parent)].keys.task(parent), "result")
    found: dict[str, list[str]] = {}
    for (tid, parent), result in zip(order, pipe.execute(), strict=True):
        found.setdefault(tid, []).append(f'"{parent}":{result or "null"}')
    return {tid: "{" + ",".join(parts) + "}" for tid, parts in found.items()}
