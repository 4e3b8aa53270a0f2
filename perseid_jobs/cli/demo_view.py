"""What ``perseid-jobs demo`` shows: counts read from Redis, and a view that fits 80 columns.

The counts cover every task of the demo's namespace, not a page of the newest:
pending and running are the sizes of their sets, and each ended task's state is
read once, when it first appears in the set of ended tasks. The failures and
cancellations seen so far stay on screen however many runs complete after them.
"""

from __future__ import annotations

from collections import Counter, deque
from datetime import UTC, datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..api.client import Client
from ..core.errors import PerseidError
from ..core.models import Series, Task

STATES = ("pending", "running", "completed", "failed", "cancelled")


class DemoState:
    """Tasks of one namespace by state, and the ones that ended lately, from Redis."""

    def __init__(self, client: Client, recent: int = 6, problems: int = 5) -> None:
        self.client = client
        self.ended: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=recent)  # ended task ids, newest last
        self.problems: deque[str] = deque(maxlen=problems)  # failed or cancelled ones
        self._edge_score = float("-inf")
        self._edge_ids: set[str] = set()  # ids already counted at _edge_score

    def poll(self) -> list[str]:
        """Read what ended since the last poll; return the ids of those that did not complete."""
        r, keys = self.client.redis, self.client.keys
        rows = r.zrangebyscore(keys.finished, self._edge_score, "+inf", withscores=True)
        new = [(tid, score) for tid, score in rows if tid not in self._edge_ids]
        if not new:
            return []
        pipe = r.pipeline(transaction=False)
        for tid, _ in new:
            pipe.hget(keys.task(tid), "status")
        bad = []
        for (tid, _), status in zip(new, pipe.execute(), strict=True):
            if status is None:  # trimmed before we read it
                continue
            self.ended[status] += 1
            self.recent.append(tid)
            if status != "completed":
                self.problems.append(tid)
                bad.append(tid)
        top = max(score for _, score in new)
        if top != self._edge_score:
            self._edge_score, self._edge_ids = top, set()
        self._edge_ids |= {tid for tid, score in rows if score == top}
        return bad

    def counts(self) -> dict[str, int]:
        """Every task of the namespace by state."""
        r, keys = self.client.redis, self.client.keys
        pipe = r.pipeline(transaction=False)
        pipe.zcard(keys.due).zcard(keys.blocked).zcard(keys.running)
        due, blocked, running = pipe.execute()
        return {"pending": due + blocked, "running": running, **dict(self.ended)}

    def tasks(self, ids: deque[str]) -> list[Task]:
        """The tasks of ``ids``, newest first (those trimmed meanwhile left out)."""
        found = []
        for tid in reversed(ids):
            try:
                found.append(self.client.get(tid))
            except PerseidError:
                continue
        return found


def clock(value: datetime | None) -> str:
    """A time of day in UTC, short enough for a narrow column."""
    return value.astimezone(UTC).strftime("%H:%M:%SZ") if value else "-"


def iso(value: datetime | None) -> str:
    """A full ISO-8601 time in UTC, for plain lines."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds") if value else "-"


def counts_line(counts: dict[str, int]) -> str:
    return "   ".join(f"{s}: {counts.get(s, 0)}" for s in STATES)


def schedule_of(s: Series) -> str:
    if s.follows:
        return f"after {s.follows}"
    return f"every {s.every}" if s.every else f"cron {s.cron} {s.tz or 'UTC'}"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
    for name in columns:
        # Ids are never cut (they are what a reader copies); free text gives way instead.
        wraps = name in ("reason", "schedule")
        table.add_column(name, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    return table


def _row(table: Table, *cells: object) -> None:
    # Text, not str: task strings are shown as they are, never read as Rich markup.
    table.add_row(*(Text(str(c)) for c in cells))


def task_rows(title: str, tasks: list[Task]) -> Table:
    table = _table(title, "id", "job", "status", "ended", "reason")
    for t in tasks:
        _row(table, t.id, t.job, t.status.value, clock(t.ended_at), t.reason or "")
    return table


def problem_lines(tasks: list[Task]) -> Text:
    """Failures and cancellations, the reason on a line of its own so it is read whole."""
    text = Text("failed or cancelled" + ("" if tasks else ": none yet"), style="italic")
    for t in tasks:
        text.append(f"\n{t.status.value:<9} {t.job:<11} {t.id} {clock(t.ended_at)}\n")
        text.append(f"    {t.reason or '-'}", style="bold" if t.status.value == "failed" else "")
    return text


def live_view(state: DemoState, header: str) -> Group:
    """The terminal view: counts, tasks that ended lately, failures, series, workers."""
    client = state.client
    series = _table("series", "series", "job", "schedule", "next", "last", "runs")
    for s in client.series():
        _row(
            series, s.id, s.job, schedule_of(s), clock(s.next_start), s.last_outcome or "-", s.runs
        )
    workers = _table("workers", "instance", "slots used/total", "running")
    for i in client.workers():
        _row(workers, i.id, f"{i.slots_used}/{i.slots_total}", i.running)
    return Group(
        Panel(Text(header), title="perseid-jobs demo"),
        Text(counts_line(state.counts())),
        task_rows("ended lately", state.tasks(state.recent)),
        problem_lines(state.tasks(state.problems)),
        series,
        workers,
    )


def plain_lines(state: DemoState, bad: list[str], elapsed: float) -> list[str]:
    """What a poll prints when stdout is not a terminal: counts, then each task that did
    not complete, once."""
    lines = [f"[{elapsed:5.1f}s] {counts_line(state.counts())}"]
    for tid in bad:
        try:
            t = state.client.get(tid)
        except PerseidError:
            continue
        lines.append(f"  {t.status.value} {t.job} {t.id} at {iso(t.ended_at)}: {t.reason or '-'}")
    return lines


def series_lines(client: Client) -> list[str]:
    """The series, one line each (for the end of a plain run)."""
    return [
        f"  series {s.id} {s.job} ({schedule_of(s)}): {s.runs} runs,"
        f" last {s.last_outcome or '-'}, skipped {s.skipped}"
        for s in client.series()
    ]
