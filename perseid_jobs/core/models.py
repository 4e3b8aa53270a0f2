"""The data that crosses module boundaries: msgspec Structs and enums.

Field names are the stable snake_case names of the ``--json`` documents.
Times are timezone-aware UTC datetimes here; Redis stores epoch milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec
import orjson


class TaskStatus(StrEnum):
    """Where a task is in its life; the last three are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the task can no longer change."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class Task(msgspec.Struct, kw_only=True):
    """One execution of a job."""

    id: str
    job: str
    status: TaskStatus
    args: dict[str, Any]
    metadata: dict[str, Any]
    start_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    instance: str | None = None
    attempt: int = 0
    series: str | None = None
    start_after: str | None = None
    log_url: str | None = None
    key: str | None = None
    slots: int = 1
    existed: bool = False
    group: str | None = None
    priority: int = 0
    # Why a pending task is not running yet, as shown by `show` (see Client.waiting).
    waiting: str | None = None
    # Operator controls (docs/controls.md): tags, and the links between a task and its retry.
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    retry_of: str | None = None
    retried_by: str | None = None


class Instance(msgspec.Struct, kw_only=True):
    """One worker process as Redis knows it."""

    id: str
    host: str
    pid: int
    slots_total: int
    slots_used: int
    running: int
    lease_expires_at: datetime | None
    version: str


class JobDefinition(msgspec.Struct, kw_only=True):
    """What a worker publishes about a job in the catalog."""

    slots: int
    max_duration_ms: int
    retries: int = 0
    backoff_ms: int = 1000
    # How the zygote runs it (see jobfile.job); published so `jobs` can show it.
    max_tasks_per_process: int = 1
    max_memory_bytes: int = 0  # 0: no limit
    # Flow control (docs/flow.md): tasks running at once over all workers, per job and
    # per (job, group); 0: no limit.
    concurrency: int = 0
    group_concurrency: int = 0
    rate: str = ""  # "10/s", "30/m", "100/h": starts over all workers; "": no limit
    group_rate: str = ""  # the same per group


class JobInfo(msgspec.Struct, kw_only=True):
    """A job of the catalog and the live instances that offer it."""

    name: str
    slots: int
    max_duration: float
    instances: list[str]
    max_tasks_per_process: int = 1  # 1: a fresh process per task
    max_memory_per_process: int | None = None  # bytes; None: no limit
    concurrency: int | None = None  # over all workers; None: no limit
    group_concurrency: int | None = None  # per group; None: no limit
    rate: str | None = None
    group_rate: str | None = None
    running: int = 0  # its tasks running now under those limits
    paused: bool = False


class Series(msgspec.Struct, kw_only=True):
    """A recurring schedule: the chain of its runs."""

    id: str
    job: str
    status: str
    every: str | None
    cron: str | None
    tz: str | None
    follows: str | None
    key: str | None
    current: str | None
    next_start: datetime | None
    last_run: str | None
    last_outcome: str | None
    last_completed_at: datetime | None
    runs: int
    skipped: int
    paused: bool = False


def ms_to_dt(value: Any) -> datetime | None:
    """Epoch milliseconds (int, or its text as Redis returns it) -> aware UTC datetime."""
    if value is None or value in ("", b"", -1, "-1"):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def dt_to_ms(value: datetime) -> int:
    """Aware datetime -> epoch milliseconds."""
    return int(value.timestamp() * 1000)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    return int(value)


def task_metadata(
    last_completed_at: Any, skipped_runs: Any, triggered: Any = None
) -> dict[str, Any]:
    """The metadata the scheduler sets on a task (the seed's names)."""
    meta: dict[str, Any] = {"lastCompletedAt": ms_to_dt(last_completed_at)}
    if skipped := _int(skipped_runs, 0):
        meta["skippedRuns"] = skipped
    if triggered in ("1", 1, True):  # an extra run of its series (`trigger`), off the grid
        meta["triggered"] = True
    return meta


def tags_from_text(text: str | None) -> dict[str, str]:
    """A task's tags from their stored form, "key=value" lines."""
    return dict(line.split("=", 1) for line in (text or "").split("\n") if line)


def task_from_hash(task_id: str, h: dict[str, str]) -> Task:
    """Build a :class:`Task` from its Redis hash (decoded strings; defaults left out)."""
    start_at = _int(h.get("start_at"), -1)
    return Task(
        id=task_id,
        job=h["job"],
        status=TaskStatus(h["status"]),
        args=orjson.loads(h.get("args") or "{}"),
        metadata=task_metadata(
            h.get("last_completed_at"), h.get("skipped_runs"), h.get("triggered")
        ),
        start_at=ms_to_dt(start_at) if start_at is not None and start_at >= 0 else None,
        started_at=ms_to_dt(h.get("started_at")),
        ended_at=ms_to_dt(h.get("ended_at")),
        exit_code=_int(h.get("exit_code")),
        reason=_text(h.get("reason")),
        instance=_text(h.get("instance")),
        attempt=_int(h.get("attempt"), 0) or 0,
        series=_text(h.get("series")),
        start_after=_text(h.get("start_after")),
        log_url=_text(h.get("log_url")),
        key=_text(h.get("key")),
        slots=_int(h.get("slots"), 1) or 1,
        group=_text(h.get("group")),
        priority=_int(h.get("priority"), 0) or 0,
        tags=tags_from_text(h.get("tags")),
        retry_of=_text(h.get("retry_of")),
        retried_by=_text(h.get("retried_by")),
    )


_json_encoder = msgspec.json.Encoder()


def to_json(obj: Any) -> bytes:
    """The ``--json`` document for a Struct or a list of them."""
    return _json_encoder.encode(obj)
