"""What the task, series and workers pages show beyond the documents: events, logs, graphs.

Every read is bounded: a task's timeline looks through at most ``TIMELINE_SCAN`` entries
of its partition's events stream, a log page shows its last ``LOG_LINES`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from ..api.client import Client
from ..core.models import Instance, Series, Task, TaskStatus, ms_to_dt
from ..core.recurrence import Recurrence, RecurrenceError, next_run
from ..logs.bucket import BucketError, read_url
from ..logs.spool import find_log

TIMELINE_SCAN = 10_000
LOG_LINES = 500
NEXT_RUNS = 10


@dataclass
class TaskView:
    """A task page's extras."""

    timeline: list[dict[str, Any]]
    log_lines: list[str]
    log_where: str
    parents: list[str]
    dependents: list[str]
    extra_fields: dict[str, Any] = field(default_factory=dict)


def events_of(client: Client, some_id: str, scan: int = TIMELINE_SCAN) -> list[dict[str, Any]]:
    """The events that name ``some_id`` (a task or a series), oldest first."""
    keys = client.keys_of(some_id)
    if keys is None:
        return []
    out = []
    for entry_id, fields in client.redis.xrevrange(keys.events, count=scan):
        if fields.get("id") == some_id or fields.get("series") == some_id:
            at = ms_to_dt(entry_id.split("-")[0])
            extra = {k: v for k, v in fields.items() if k not in ("event", "id")}
            out.append({"at": at, "event": fields.get("event", ""), "id": fields["id"], **extra})
    return out[::-1]


def log_bytes(task: Task, logs_dir: Path | None) -> tuple[bytes | None, str]:
    """The task's log and where it came from (None and why, when there is none)."""
    if task.status is TaskStatus.RUNNING or not task.log_url:
        local = find_log(logs_dir, task.id) if logs_dir is not None else None
        if local is not None:
            try:
                return local.read_bytes(), f"live, from the spool {local}"
            except OSError:
                pass
    if task.log_url:
        try:
            return read_url(task.log_url), f"stored at {task.log_url}"
        except BucketError as exc:
            return None, f"cannot read the stored log: {exc}"
    if task.status is TaskStatus.PENDING:
        return None, "pending: no log yet"
    if task.status.terminal:
        return None, f"pending upload from instance {task.instance}"
    return None, (
        f"running on instance {task.instance}: its log is on that host until it ends"
        " (start the dashboard there with --logs-dir to tail it)"
    )


def read(client: Client, task: Task, logs_dir: Path | None) -> TaskView:
    """The extras of one task's page."""
    from ..cli.render import log_line  # the command line's reading of a pino line

    data, where = log_bytes(task, logs_dir)
    lines = [log_line(raw) for raw in (data or b"").splitlines()[-LOG_LINES:]]
    keys = client.keys_of(task.id)
    assert keys is not None
    pipe = client.redis.pipeline(transaction=False)
    pipe.smembers(keys.waiting(task.id))
    pipe.smembers(keys._k("remote_waiting", task.id))
    local, remote = pipe.execute()
    dependents = sorted(local) + sorted(r.partition("\t")[2] for r in remote)
    known = set(Task.__struct_fields__)
    base = {"id", "job", "status", "args", "metadata", "waiting", "existed"}
    # Fields this page has no row for (ones other branches add: result, progress, tags...)
    extra = {
        name: getattr(task, name)
        for name in known - base
        if name not in _SHOWN and getattr(task, name) not in (None, "", [], {})
    }
    return TaskView(
        timeline=events_of(client, task.id),
        log_lines=lines,
        log_where=where,
        parents=[p for p in _parents(task) if p],
        dependents=dependents,
        extra_fields=dict(sorted(extra.items())),
    )


_SHOWN = {
    "start_at", "started_at", "ended_at", "exit_code", "reason", "instance", "attempt",
    "series", "start_after", "log_url", "key", "slots", "group", "priority",
}  # fmt: skip


def _parents(task: Task) -> list[str]:
    several: Any = getattr(task, "parents", None)  # a field another branch may add
    if several:
        return [str(p) for p in several]
    return [task.start_after] if task.start_after else []


def next_runs(series: Series, spec: dict[str, Any], count: int = NEXT_RUNS) -> list[datetime]:
    """The series' next ``count`` starts (computed as the scheduler does)."""
    if series.next_start is None or series.follows:
        return []
    try:
        rec = msgspec.convert({**spec, "catch_up": "skip"}, Recurrence)
    except (msgspec.ValidationError, RecurrenceError):
        return []
    at = int(series.next_start.timestamp() * 1000)
    origin = int(spec.get("origin", at))
    out = [at]
    while len(out) < count:
        nxt = next_run(rec, origin_ms=origin, current_start_ms=at, now_ms=at).start_ms
        if nxt <= at:
            break
        out.append(nxt)
        at = nxt
    return [dt for ms in out if (dt := ms_to_dt(ms)) is not None]


def series_extra(client: Client, series: Series) -> dict[str, Any]:
    """A series page's extras: next runs in its zone, recent outcomes, notable runs."""
    import orjson

    keys = client.keys_of(series.id)
    assert keys is not None
    raw = client.redis.hmget(keys.series(series.id), "spec", "origin")
    spec = orjson.loads(raw[0] or "{}")
    spec["origin"] = int(raw[1]) if raw[1] else None
    if spec["origin"] is None:
        del spec["origin"]
    spec.pop("catch_up", None)
    runs = next_runs(series, spec)
    tz = series.tz or "UTC"
    events = events_of(client, series.id)
    # What the scheduler recorded: a skip (with its count), a trigger, a retry, the end.
    notable = [
        e
        for e in events
        if e["event"] in ("skipped", "retry", "series_ended", "series_cancelled")
        or (e["event"] == "scheduled" and (e.get("triggered") or e.get("caught_up")))
    ]
    return {
        "next_runs": [(dt, _in_zone(dt, tz)) for dt in runs],
        "tz": tz,
        "strip": client.series_runs(series.id, limit=30)[::-1],
        "notable": notable,
        "catch_up": "all" if str(spec.get("catch_up_window_ms")) != "None" else "skip",
    }


def _in_zone(dt: datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    try:
        return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (KeyError, ValueError):
        return dt.isoformat()


def instance_tasks(client: Client, live: list[Instance]) -> dict[str, list[str]]:
    """Per instance, the ids of the tasks it runs (over every partition)."""
    parts = client.partitions()
    pipe = client.redis.pipeline(transaction=False)
    for inst in live:
        for keys in parts:
            pipe.smembers(keys.instance_tasks(inst.id))
    replies = pipe.execute() if live else []
    n = len(parts)
    return {
        inst.id: sorted(set().union(*replies[i * n : (i + 1) * n])) for i, inst in enumerate(live)
    }


def draining(client: Client, live: list[Instance]) -> dict[str, bool]:
    """Per instance, whether it is draining (claims nothing more) in its first partition."""
    pipe = client.redis.pipeline(transaction=False)
    for inst in live:
        pipe.hget(client.keys.instance(inst.id), "draining")
    return {i.id: d == "1" for i, d in zip(live, pipe.execute() if live else [], strict=True)}
