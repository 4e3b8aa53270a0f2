"""A worker stopped (SIGSTOP) past its lease: reaped, its series goes on, it fences on SIGCONT."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from perseid_jobs import Client, TaskStatus

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet, read_attempts, slots_left

pytestmark = pytest.mark.chaos


def gone(pid: int) -> bool:
    """True once ``pid`` is dead (or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def test_stopped_worker_is_reaped_fenced_and_its_late_finish_changes_nothing(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any, report: Any
) -> None:
    server = redis_servers()
    client = Client.from_url(server.url, namespace="pause", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(server.url, "pause", tmp_path)
    fleets.append(fleet)
    paused = fleet.start(2)
    wait_workers(client, 1)
    first = client.schedule("chaos_record", {"dir": str(records), "seconds": 30}, every="1s")
    wait_until(lambda: read_attempts(records).get(first.id), 15, "the first run to start")
    old_instance = client.get(first.id).instance
    child = read_attempts(records)[first.id][0].pid
    fleet.start(2)
    wait_workers(client, 2)

    os.kill(paused.proc.pid, signal.SIGSTOP)
    stopped_at = client.now_ms()
    try:
        reaped = client.wait(first.id, 10)
        assert reaped.status is TaskStatus.FAILED
        assert reaped.reason == f"instance {old_instance} lost"
        assert reaped.ended_at is not None
        detection = reaped.ended_at.timestamp() * 1000 - stopped_at
        series = next(s for s in client.series() if s.id == first.series)
        assert series.current and series.current != first.id
        assert client.get(series.current).status in (TaskStatus.PENDING, TaskStatus.RUNNING)
        # The worker is stopped, but its zygote is not: it killed the task on its own
        # when the lease deadline passed, before the next run could start elsewhere.
        wait_until(lambda: gone(child), 5, "the stopped worker's task to be killed")
        child_gone_while_stopped = True
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)

    new_id = fenced_and_its_late_finish_changed_nothing(client, paused, reaped, old_instance)
    client.cancel(series.current, series=True)
    wait_until(lambda: slots_left(client) == (0, 0), 10, "every slot back")
    report(
        "SIGSTOP past the lease",
        detection_ms=f"{detection:.0f}",
        child_gone_while_stopped=child_gone_while_stopped,
        late_finish="stale",
        next_run=series.current,
        reregistered_as=new_id,
    )


def fenced_and_its_late_finish_changed_nothing(
    client: Client, paused: Any, reaped: Any, old_instance: str | None
) -> str:
    """After SIGCONT: the worker fences, its finish is stale, it serves under a new id."""
    wait_until(lambda: "fenced" in paused.output(), 10, "the worker to fence")
    stale = wait_until(
        lambda: [
            f
            for _, f in client.redis.xrange(client.keys.events, count=100000)
            if f["event"] == "stale_finish" and f["id"] == reaped.id
        ],
        10,
        "the late finish to be recorded as stale",
    )
    assert stale[0]["instance"] == old_instance  # type: ignore[index]
    after = client.get(reaped.id)
    assert (after.status, after.reason, after.ended_at) == (
        reaped.status,
        reaped.reason,
        reaped.ended_at,
    )
    back = wait_until(
        lambda: [w for w in client.workers() if w.pid == paused.proc.pid], 10, "re-registration"
    )
    assert back[0].id != old_instance  # type: ignore[index]
    assert paused.proc.poll() is None
    return str(back[0].id)  # type: ignore[index]
