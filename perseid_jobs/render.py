"""Human output of the command line: tables and log lines (``--json`` is in models)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from .models import Instance, JobInfo, Series, Task

# Piped output keeps whole ids and times: a table as wide as its content.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)

_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}
_PINO_FIELDS = {"level", "time", "pid", "hostname", "msg", "task", "job", "err"}


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if value else "-"


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


def job_table(jobs: Iterable[JobInfo]) -> Table:
    """The catalog as a table."""
    table = Table("job", "slots", "max duration", "instances")
    for j in jobs:
        table.add_row(j.name, str(j.slots), f"{j.max_duration:g}s", ", ".join(j.instances) or "-")
    return table


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
        if s.follows:
            sched = f"after each run of {s.follows}"
        elif s.every:
            sched = f"every {s.every}"
        else:
            sched = f"cron {s.cron} ({s.tz})"
        table.add_row(
            s.id,
            s.job,
            sched,
            s.status,
            _t(s.next_start),
            s.last_run or "-",
            s.last_outcome or "-",
            str(s.runs),
            str(s.skipped),
            s.key or "-",
        )
    return table


def log_line(raw: bytes) -> str:
    """One pino JSON line as ``time LEVEL msg key=value`` (+ traceback)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return raw.decode("utf-8", "replace")
    when = datetime.fromtimestamp(doc.get("time", 0) / 1000).strftime("%H:%M:%S.%f")[:-3]
    level = _LEVELS.get(doc.get("level", 30), str(doc.get("level")))
    extra = " ".join(
        f"{k}={orjson.dumps(v).decode()}" for k, v in doc.items() if k not in _PINO_FIELDS
    )
    out = f"{when} {level:5} {doc.get('msg', '')}" + (f"  {extra}" if extra else "")
    err = doc.get("err")
    if isinstance(err, dict) and err.get("stack"):
        out += "\n" + str(err["stack"]).rstrip()
    return out
