"""The client's flow controls: pause and resume a job or a group, and say why a task waits.

:class:`FlowOps` holds each control once, as an operation (``calls.py``);
:class:`FlowControls`, a mixin of :class:`perseid_jobs.api.client.Client`, drives them
on a sync Redis, and :class:`perseid_jobs.api.aio.AsyncClient` on an asyncio one. A pause is
recorded in every partition (a group's tasks may live in any of them) and holds back
the lanes of its tasks (see ``lua/includes/flow.lua`` and docs/flow.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ..core.errors import InvalidArgs, SeriesEnded, SeriesNotFound
from ..core.jobfile import validate_job_name
from ..core.models import Instance, Task, TaskStatus, ms_to_dt
from ..core.timefmt import format_time
from ..store.keys import Keys
from ..store.script_io import AlreadyEnded, NotFound, PauseReply
from ..store.scripts import decode, pause_argv
from .calls import Eval, Op, cmd
from .partitioned import Partitioned, SyncPartitioned
from .scheduling import check_group

Kind = Literal["job", "group", "series"]
# A lane scored from here on in its open set is parked in place: its group's limit is
# full (lua/includes/flow.lua's PARKED).
PARKED = 10**15


class FlowOps(Partitioned):
    """Pause, resume and waiting reasons over all partitions, as operations (``calls.py``)."""

    def _pause(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> Op[bool]:
        """Hold back the pending tasks of a job, a group or a series; False if paused already."""
        kind, name = _target(job, group, series)
        if kind == "job":
            yield from self._job_definition(name)  # type: ignore[attr-defined]  # UnknownJob
        return (yield from self._set_paused(kind, name, pause=True))

    def _resume(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> Op[bool]:
        """Let what a pause held back run again, in due order; False if it was not paused."""
        kind, name = _target(job, group, series)
        return (yield from self._set_paused(kind, name, pause=False))

    def _set_paused(self, kind: Kind, name: str, *, pause: bool) -> Op[bool]:
        if kind == "series":
            where = [(yield from self._keys_of(name))]
        else:
            where = list((yield from self._partitions(record=True)))
        changed = False
        for keys in where:
            if keys is None:
                raise SeriesNotFound(name)
            while True:  # bounded batches: a resume of many lanes never blocks Redis long
                raw = yield Eval(keys, "pause", pause_argv(kind, name, pause))
                reply: PauseReply = decode(raw, PauseReply)  # type: ignore[arg-type]
                if isinstance(reply, NotFound):
                    raise SeriesNotFound(name)
                if isinstance(reply, AlreadyEnded):
                    raise SeriesEnded(name, reply.status)
                changed = changed or bool(reply.changed)
                if pause or reply.held == 0:
                    break
        return changed

    def _paused(self) -> Op[dict[str, datetime]]:
        """What is paused ("job J", "group G") and since when."""
        raw = yield cmd("hgetall", (yield from self._first_keys()).paused)
        return {k.replace("\t", " ", 1): dt for k, v in raw.items() if (dt := ms_to_dt(v))}

    def _waiting(self, task: Task, live: list[Instance] | None = None) -> Op[str | None]:
        """Why a pending task is not running yet (None for a task that is not pending)."""
        if task.status is not TaskStatus.PENDING:
            return None
        keys = yield from self._keys_of(task.id)
        assert keys is not None
        if task.series and (yield cmd("hexists", keys.paused_series, task.series)):
            return f"paused (series {task.series})"
        lane = (yield cmd("hget", keys.task(task.id), "lane")) or ""
        gate = (yield cmd("hget", keys.lane_gate, lane)) if lane else None
        if lane and not gate and (yield from _open_score(keys, lane)) >= PARKED:
            gate = "g\t" + "\t".join(lane.split("\t")[:2])  # parked in place by its group
        if gate:
            return (yield from _gate_text(keys, gate))
        now_ms = yield from self._now_ms()  # type: ignore[attr-defined]
        rated = yield from _rate_wait(keys, lane, task, now_ms)
        if rated:
            return rated
        if task.waiting_on and task.start_at is None:  # a fan-in: the parents not completed
            return f"after {', '.join(task.waiting_on)}"
        if task.start_after and task.start_at is None:
            return f"after {task.start_after}"
        if task.start_at is not None:
            start_ms = int(task.start_at.timestamp() * 1000)
            if start_ms > (yield from self._now_ms()):  # type: ignore[attr-defined]
                return f"due at {format_time(task.start_at)}"
        return (yield from self._capacity_wait(task, live))

    def _capacity_wait(self, task: Task, live: list[Instance] | None) -> Op[str]:
        """Why a due task that nothing holds back has not started: slots, or no instance."""
        if live is None:
            live = yield from self._workers()  # type: ignore[attr-defined]
        assert live is not None
        biggest = max((w.slots_total for w in live), default=0)
        if not live:
            return "no live instance"
        if task.slots > biggest:
            return f"no live instance has {task.slots} slots"
        return "due now: waiting for a free slot on an instance that offers the job"


class FlowControls(FlowOps, SyncPartitioned):
    """The flow controls of :class:`~perseid_jobs.api.client.Client`, on its sync ``redis``."""

    def pause(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> bool:
        """Hold back the pending tasks of a job, a group or a series (running ones run on).

        Returns False if it was paused already. Raises UnknownJob for a job neither the
        catalog nor the client's jobs directory has, SeriesNotFound for an unknown series,
        SeriesEnded for one that ended.
        """
        return self._run(self._pause(job=job, group=group, series=series))

    def resume(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> bool:
        """Let what a pause held back run again, in due order; False if it was not paused.

        A resumed series' run is due at its own start, so its missed runs follow the
        series' catch-up policy, as after any downtime.
        """
        return self._run(self._resume(job=job, group=group, series=series))

    def paused(self) -> dict[str, datetime]:
        """What is paused ("job J", "group G") and since when."""
        return self._run(self._paused())

    def waiting(self, task: Task, live: list[Instance] | None = None) -> str | None:
        """Why a pending task is not running yet (None for a task that is not pending).

        ``live``: the live instances, when the caller has read them (``tasks`` asks for
        many tasks' reasons, and reads them once).
        """
        return self._run(self._waiting(task, live))


def _target(job: str | None, group: str | None, series: str | None) -> tuple[Kind, str]:
    if sum(x is not None for x in (job, group, series)) != 1:
        raise InvalidArgs("give one of --job J, --group G or --series S")
    if job is not None:
        return "job", validate_job_name(job)
    if series is not None:
        return "series", series
    return "group", check_group(group)


def _open_score(keys: Keys, lane: str) -> Op[float]:
    """A lane's score in its priority's open set (-1: not open)."""
    parts = lane.split("	")
    prio = int(parts[2]) if len(parts) > 2 else 0
    score = yield cmd("zscore", keys.plane(prio) if prio else keys.lanes, lane)
    return -1.0 if score is None else float(score)


def _rate_wait(keys: Keys, lane: str, task: Task, now_ms: int) -> Op[str | None]:
    """ "rate limit: next at ..." when the task's open lane waits for its rate (the claim
    scores it by the next start the rate allows, later than the head's own start)."""
    score = (yield from _open_score(keys, lane)) if lane else -1.0
    start_ms = int(task.start_at.timestamp() * 1000) if task.start_at else 0
    if score < 0 or score <= max(now_ms, start_ms):
        return None
    return f"rate limit: next at {format_time(ms_to_dt(int(score)))}"


def _gate_text(keys: Keys, gate: str) -> Op[str]:
    """A gate (see lua/includes/flow.lua) as the words `show` prints."""
    kind, _, rest = gate.partition("\t")
    if kind == "p":
        what, _, name = rest.partition("\t")
        return f"paused ({what} {name})"
    job, _, group = rest.partition("\t")
    running = int((yield cmd("hget", keys.flow_running, rest)) or 0)
    limits = ((yield cmd("hget", keys.flow, job)) or "0\t0").split("\t")
    if kind == "g":
        return f"group {group} concurrency {running}/{limits[1]} reached"
    return f"job concurrency {running}/{limits[0]} reached"
