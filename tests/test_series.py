"""Recurring series, chains after other tasks, catch-up and idempotent keys, end to end."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from perseid_jobs import Client, DependencyEndedWarning, PastStartWarning, TaskStatus
from perseid_jobs.core.errors import InvalidTime, ParentNotFound
from perseid_jobs.core.models import Series, dt_to_ms

from .conftest import wait_until, wait_workers


def series_of(client: Client, sid: str) -> Series:
    return next(s for s in client.series() if s.id == sid)


def runs_of(client: Client, sid: str) -> list:
    return sorted((t for t in client.tasks(limit=10000) if t.series == sid), key=lambda t: t.id)


def test_interval_series_runs_on_its_grid_with_last_completed_at(
    client: Client, start_worker
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    first = client.schedule("hello", every="1s")
    assert first.series
    wait_until(lambda: series_of(client, first.series).runs >= 3, 10, "three runs")
    runs = [t for t in runs_of(client, first.series) if t.status.terminal][:3]
    assert [t.status for t in runs] == [TaskStatus.COMPLETED] * 3
    assert runs[0].metadata["lastCompletedAt"] is None
    # Each run carries the end time of the one before it.
    for prev, cur in itertools.pairwise(runs):
        assert cur.metadata["lastCompletedAt"] == prev.ended_at
    # Fixed grid: starts are exactly 1 s apart, whatever the run time or claim delay.
    starts = [t.start_at for t in runs]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(starts))
    assert all(t.started_at >= t.start_at for t in runs)


def test_failing_run_does_not_stop_its_series(client: Client, start_worker) -> None:
    start_worker(4)
    first = client.schedule("fail", every="1s")
    wait_until(lambda: series_of(client, first.series).runs >= 2, 10, "two runs")
    s = series_of(client, first.series)
    assert s.status == "active" and s.last_outcome == "failed"
    live = [t for t in runs_of(client, first.series) if not t.status.terminal]
    assert len(live) == 1


def test_killed_worker_series_run_yields_exactly_one_next_run(client: Client, start_worker) -> None:
    victim = start_worker(4)
    wait_workers(client, 1)
    first = client.schedule("sleep", {"seconds": 60}, every="1s")
    wait_until(lambda: client.get(first.id).status is TaskStatus.RUNNING, 10, "running")
    victim.kill9()
    start_worker(4)
    done = client.wait(first.id, 10)
    assert done.status is TaskStatus.FAILED and done.reason.endswith("lost")
    runs = runs_of(client, first.series)
    assert [t.id for t in runs if not t.status.terminal] == [
        series_of(client, first.series).current
    ]
    assert sum(1 for t in runs if t.id != first.id) == 1


def test_chain_runs_in_order(client: Client, start_worker) -> None:
    a = client.schedule("sleep", {"seconds": 0.3})
    b = client.schedule("hello", after=a.id)
    c = client.schedule("hello", after=b.id)
    assert client.get(b.id).status is TaskStatus.PENDING and client.get(b.id).start_at is None
    start_worker(4)
    done = [client.wait(i, 15) for i in (a.id, b.id, c.id)]
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 3
    assert done[0].ended_at <= done[1].started_at and done[1].ended_at <= done[2].started_at


def test_failed_parent_cancels_the_whole_chain_with_reasons(client: Client, start_worker) -> None:
    a = client.schedule("fail")
    b = client.schedule("hello", after=a.id)
    c = client.schedule("hello", after=b.id)
    start_worker(2)
    assert client.wait(a.id, 15).status is TaskStatus.FAILED
    tb, tc = client.wait(b.id, 5), client.wait(c.id, 5)
    assert (tb.status, tb.reason) == (TaskStatus.CANCELLED, f"dependency {a.id} failed")
    assert (tc.status, tc.reason) == (TaskStatus.CANCELLED, f"dependency {b.id} cancelled")


def test_recurring_parent_drives_its_dependent_once_per_completed_run(
    client: Client, start_worker
) -> None:
    parent = client.schedule("hello", every="1s")
    follower = client.schedule("cancel_self", after=parent.id)
    assert follower.series and follower.series != parent.series
    start_worker(4)
    wait_until(lambda: series_of(client, parent.series).runs >= 3, 10, "three parent runs")
    client.cancel(parent.id, series=True)  # --series: whichever run is named, ended or not
    wait_until(lambda: all(t.status.terminal for t in client.tasks(limit=10000)), 10, "all ended")
    parent_done = [t for t in runs_of(client, parent.series) if t.status is TaskStatus.COMPLETED]
    follower_runs = [t for t in runs_of(client, follower.series) if t.started_at]
    assert len(follower_runs) == len(parent_done) >= 3
    assert series_of(client, follower.series).status == "ended"


def test_same_key_twice_creates_one_series(client: Client) -> None:
    one = client.schedule("hello", every="1h", key="nightly")
    two = client.schedule("hello", every="1h", key="nightly")
    assert not one.existed and two.existed and two.id == one.id
    assert len(client.series()) == 1
    client.cancel(one.id)
    assert series_of(client, one.series).status == "cancelled"
    three = client.schedule("hello", every="1h", key="nightly")
    assert not three.existed and three.series != one.series


def test_cancel_of_a_pending_run_ends_the_series(client: Client) -> None:
    first = client.schedule("hello", every="1h", at="+1h")
    client.cancel(first.id)
    s = series_of(client, first.series)
    assert s.status == "cancelled"
    assert [t.status for t in runs_of(client, first.series)] == [TaskStatus.CANCELLED]


def test_overdue_series_runs_once_and_counts_the_skipped_occurrences(
    client: Client, start_worker
) -> None:
    at = datetime.fromtimestamp(client.now_ms() / 1000, UTC) - timedelta(seconds=5.5)
    with pytest.warns(PastStartWarning, match="ago"):
        first = client.schedule("hello", every="1s", at=at)
    start_worker(2)
    assert client.wait(first.id, 10).status is TaskStatus.COMPLETED
    nxt = client.get(
        wait_until(
            lambda: (
                series_of(client, first.series).current != first.id
                and series_of(client, first.series).current
            ),
            5,
            "next run",
        )
    )
    assert nxt.metadata["skippedRuns"] >= 5
    assert series_of(client, first.series).skipped == nxt.metadata["skippedRuns"]
    assert nxt.start_at > first.start_at + timedelta(seconds=5)


def test_cron_series_starts_at_the_first_occurrence_at_or_after_at(client: Client) -> None:
    task = client.schedule(
        "hello", cron="0 9 * * MON-FRI", tz="Europe/Paris", at="2036-12-06T10:00:00+01:00"
    )  # a Saturday, in the future (one in the past would warn that it runs now)
    assert task.start_at == datetime(2036, 12, 8, 8, 0, tzinfo=UTC)  # Monday 09:00 Paris
    s = series_of(client, task.series)
    assert (s.cron, s.tz, s.next_start) == ("0 9 * * MON-FRI", "Europe/Paris", task.start_at)


def test_after_an_unknown_task_is_an_error_and_an_ended_one_settles_at_once(
    client: Client, start_worker
) -> None:
    with pytest.raises(ParentNotFound, match="no such task"):
        client.schedule("hello", after="01NOPE")
    start_worker(2)
    done = client.wait(client.schedule("hello").id, 10)
    assert client.wait(client.schedule("hello", after=done.id).id, 10).status is (
        TaskStatus.COMPLETED
    )
    failed = client.wait(client.schedule("fail").id, 10)
    with pytest.warns(DependencyEndedWarning, match=f"dependency {failed.id} failed"):
        dependent = client.schedule("hello", after=failed.id)
    assert (dependent.status, dependent.reason) == (
        TaskStatus.CANCELLED,
        f"dependency {failed.id} failed",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": "0"}, "every"),
        ({"every": "-5s"}, "every"),
        ({"every": "1ms"}, "1s floor"),
        ({"every": "1s", "cron": "* * * * *"}, "not both"),
        ({"cron": "61 * * * *"}, "minute"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "time zone"),
        ({"every": "1s", "catch_up": "all"}, "window"),
        ({"after": "x", "every": "1s"}, "--after"),
        ({"at": "+1m", "after": "x"}, "--after"),
    ],
)
def test_bad_recurrence_is_refused_and_writes_nothing(
    client: Client, kwargs: dict, message: str
) -> None:
    # The namespace's keys, not the server's: another test's keys expire meanwhile.
    mine = f"{{{client.namespace}*"
    before = sorted(client.redis.scan_iter(match=mine))
    with pytest.raises(InvalidTime, match=message):
        client.schedule("hello", **kwargs)
    assert sorted(client.redis.scan_iter(match=mine)) == before


def test_catch_up_all_runs_each_missed_occurrence_in_the_window_oldest_first(
    client: Client, start_worker
) -> None:
    now = client.now_ms()
    at = datetime.fromtimestamp((now - 6_500) / 1000, UTC)
    with pytest.warns(PastStartWarning, match="ago"):
        first = client.schedule("hello", every="1s", at=at, catch_up="all", catch_up_window="3s")
    start_worker(2)
    wait_until(lambda: series_of(client, first.series).runs >= 5, 15, "five runs")
    runs = runs_of(client, first.series)[:5]
    starts = [dt_to_ms(t.start_at) for t in runs]
    # One per grid point, oldest first: no gap inside the window, nothing skipped there.
    assert all(b - a == 1000 for a, b in itertools.pairwise(starts[1:]))
    # Occurrences older than the window (3 s) were skipped and counted.
    assert runs[1].metadata.get("skippedRuns", 0) >= 2
    assert dt_to_ms(runs[1].start_at) >= dt_to_ms(runs[0].ended_at) - 3_000 - 1000
