"""Human output of the command line: tables and log lines (``--json`` is in models)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import orjson
from rich.console import Console, Group
from rich.table import Table

from ..core.models import Instance, JobInfo, Series, Task
from ..core.timefmt import format_time

# Piped output keeps whole ids and times: a table as wide as its content.
# Markup off: ids, args, reasons and log lines are the user's text; "[x]" must print as is.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 240)

_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}
_PINO_FIELDS = {"level", "time", "pid", "hostname", "msg", "task", "job", "err"}
# Fields perseid-jobs itself writes in epoch ms (the stored line stays machine-readable).
_TIME_FIELDS = {"startedAt"}


_t = format_time  # every time printed goes through the one convention


def task_table(tasks: Iterable[Task]) -> Table:
    """Tasks as a table."""
    table = Table("id", "job", "status", "start at", "started", "ended", "instance", "reason")
    for t in tasks:
        table.add_row(
            t.id,
            t.job,
            t.status.value,
            _t(t.start_at),
            _t(t.started_at),
            _t(t.ended_at),
            t.instance or "-",
            (t.reason or "")[:80],
        )
    return table


def task_detail(t: Task) -> Table:
    """One task, field by field."""
    table = Table(show_header=False, box=None)
    log = t.log_url
    if not log and t.status.terminal and t.instance:
        log = f"pending upload from instance {t.instance}"
    rows: list[tuple[str, Any]] = [
        ("id", t.id),
        ("job", t.job),
        ("status", t.status.value),
        ("args", orjson.dumps(t.args).decode()),
        ("start at", _t(t.start_at)),
        ("started at", _t(t.started_at)),
        ("ended at", _t(t.ended_at)),
        ("exit code", t.exit_code),
        ("reason", t.reason),
        ("instance", t.instance),
        ("attempt", t.attempt),
        ("series", t.series),
        ("after", t.start_after),
        ("key", t.key),
        ("group", t.group),
        ("priority", t.priority or None),
        ("tags", " ".join(f"{k}={v}" for k, v in t.tags.items()) or None),
        ("triggered", "yes: an extra run (trigger)" if t.metadata.get("triggered") else None),
        ("retry of", t.retry_of),
        ("retried by", t.retried_by),
        ("waiting", t.waiting),
        ("log", log),
    ]
    for name, value in rows:
        table.add_row(name, "-" if value is None or value == "" else str(value))
    return table


def worker_table(instances: Iterable[Instance]) -> Table:
    """Instances as a table."""
    table = Table("id", "host", "pid", "slots used/total", "running", "lease expires", "version")
    for i in instances:
        table.add_row(
            i.id,
            i.host,
            str(i.pid),
            f"{i.slots_used}/{i.slots_total}",
            str(i.running),
            _t(i.lease_expires_at),
            i.version,
        )
    return table


def job_table(jobs: Iterable[JobInfo], live: Iterable[Instance]) -> Table:
    """The catalog as a table; a job no live instance can run says why."""
    biggest = max((i.slots_total for i in live), default=0)
    table = Table("job", "slots", "max duration", "process", "limits", "instances")
    for j in jobs:
        if j.instances:
            where = ", ".join(j.instances)
        elif not biggest:
            where = "none: no live worker"
        elif j.slots > biggest:
            where = f"none: needs {j.slots} slots, the largest live instance offers {biggest}"
        else:
            where = "none: no live worker with this job and enough slots"
        row = (j.name, str(j.slots), f"{j.max_duration:g}s", _process(j), _limits(j), where)
        table.add_row(*row)
    return table


def _limits(j: JobInfo) -> str:
    """A job's flow-control limits, what runs under them, and whether it is paused."""
    parts = []
    if j.concurrency:
        parts.append(f"concurrency {j.running}/{j.concurrency}")
    if j.group_concurrency:
        parts.append(f"{j.group_concurrency} per group")
    if j.rate:
        parts.append(f"rate {j.rate}")
    if j.group_rate:
        parts.append(f"rate {j.group_rate} per group")
    if j.paused:
        parts.append("paused")
    return ", ".join(parts) or "-"


def _process(j: JobInfo) -> str:
    """How each task of the job gets its process: fresh, or reused up to N tasks."""
    if j.max_tasks_per_process <= 1:
        return "fresh"
    cap = j.max_memory_per_process
    memory = f", retired past {cap / 1e6:g} MB" if cap else ""
    return f"reused, {j.max_tasks_per_process} tasks{memory}"


def series_table(series: Iterable[Series]) -> Table:
    """Recurring schedules as a table."""
    table = Table(
        "series",
        "job",
        "schedule",
        "status",
        "next run",
        "last run",
        "last outcome",
        "runs",
        "skipped",
        "key",
    )
    for s in series:
        table.add_row(
            s.id,
            s.job,
            _schedule(s),
            s.status + (" (paused)" if s.paused else ""),
            _t(s.next_start),
            s.last_run or "-",
            s.last_outcome or "-",
            str(s.runs),
            str(s.skipped),
            s.key or "-",
        )
    return table


def _schedule(s: Series) -> str:
    if s.follows:
        return f"after each run of {s.follows}"
    if s.every:
        return f"every {s.every}"
    return f"cron {s.cron} ({s.tz})"


def series_detail(s: Series, current: Task | None, recent: list[Task]) -> Group:
    """One series: its fields, its pending (or running) run, and its last ended runs."""
    fields = Table(show_header=False, box=None)
    if current is None:
        run = "-"
    elif current.status.value == "pending":
        run = f"{current.id} (pending, starts {_t(current.start_at)})"
    else:
        run = f"{current.id} ({current.status.value} since {_t(current.started_at)})"
    rows: list[tuple[str, Any]] = [
        ("series", s.id),
        ("job", s.job),
        ("schedule", _schedule(s)),
        ("status", s.status + (" (paused)" if s.paused else "")),
        ("key", s.key),
        ("next run", _t(s.next_start) if s.next_start else None),
        ("current run", run),
        ("runs", s.runs),
        ("skipped", s.skipped),
        ("last completed", _t(s.last_completed_at) if s.last_completed_at else None),
    ]
    for name, value in rows:
        fields.add_row(name, "-" if value is None or value == "" else str(value))
    runs = Table("last runs", "status", "started", "ended", "reason", title_justify="left")
    for t in recent:
        runs.add_row(t.id, t.status.value, _t(t.started_at), _t(t.ended_at), t.reason or "-")
    if not recent:
        return Group(fields, "no ended run yet")
    return Group(fields, runs)


def log_line(raw: bytes) -> str:
    """One pino JSON line as ``time LEVEL msg key=value`` (+ traceback)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return raw.decode("utf-8", "replace")
    when = _epoch_ms(doc.get("time"))
    level = _LEVELS.get(doc.get("level", 30), str(doc.get("level")))
    extra = " ".join(f"{k}={_extra_value(k, v)}" for k, v in doc.items() if k not in _PINO_FIELDS)
    out = f"{when} {level:5} {doc.get('msg', '')}" + (f"  {extra}" if extra else "")
    err = doc.get("err")
    if isinstance(err, dict) and err.get("stack"):
        out += "\n" + str(err["stack"]).rstrip()
    return out


def _epoch_ms(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_time(value)
    return "-" if value is None else str(value)


def _extra_value(key: str, value: Any) -> str:
    if key in _TIME_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return format_time(value)
    return orjson.dumps(value).decode()
