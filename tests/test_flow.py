"""Flow control over real workers: job and group concurrency, fairness, pause and resume.

Intervals come from each task's own record (started_at when claimed, ended_at when its
end was recorded), and per attempt from the events stream, so an overlap anywhere in
the deployment shows.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import orjson
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.client import CapacityWarning
from perseid_jobs.core.errors import (
    InvalidArgs,
    JobDefinitionError,
    SeriesEnded,
    SeriesNotFound,
    UnknownJob,
)
from perseid_jobs.core.jobfile import job
from perseid_jobs.core.models import Task
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, wait_until, wait_workers
from .test_cli import cli


def ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def most_at_once(tasks: list[Task]) -> int:
    """The most tasks whose [started_at, ended_at) intervals overlap at one moment."""
    edges = sorted(
        [(ms(t.started_at), 1) for t in tasks] + [(ms(t.ended_at), -1) for t in tasks]
    )  # an end at the same millisecond as a start sorts first: -1 < 1
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def wait_all(client: Client, tasks: list[Task], timeout: float = 60) -> list[Task]:
    return [client.wait(t.id, timeout) for t in tasks]


def test_concurrency_1_runs_never_overlap_over_three_workers(client: Client, start_worker) -> None:
    for _ in range(3):
        start_worker(4)
    wait_workers(client, 3)
    tasks = [client.schedule("flow_serial") for _ in range(300)]
    done = wait_all(client, tasks, 120)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    assert most_at_once(done) == 1


def attempt_intervals(raw_redis: redis.Redis, client: Client) -> list[tuple[int, int]]:
    """[start, end) of every attempt, from the events stream (entry ids are Redis ms)."""
    started: dict[str, int] = {}
    spans = []
    for entry_id, f in raw_redis.xrange(client.keys.events):
        at = int(entry_id.split("-")[0])
        if f["event"] == "running":
            started[f["id"]] = at
        elif f["event"] in ("retry", "completed", "failed", "cancelled") and f["id"] in started:
            spans.append((started.pop(f["id"]), at))
    return spans


def test_a_retry_never_breaks_a_limit(client: Client, start_worker, raw_redis: redis.Redis) -> None:
    start_worker(4)
    start_worker(4)
    wait_workers(client, 2)
    tasks = [client.schedule("flow_serial", {"fail_first": i % 3 == 0}) for i in range(30)]
    done = wait_all(client, tasks)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    spans = sorted(attempt_intervals(raw_redis, client))
    assert len(spans) == 40  # 30 tasks, 10 of them twice
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_group_limits_hold_per_group_and_groups_run_side_by_side(
    client: Client, start_worker
) -> None:
    start_worker(8)
    wait_workers(client, 1)
    by_group = {
        g: [client.schedule("flow_grouped", {"seconds": 0.3}, group=g) for _ in range(5)]
        for g in "abc"
    }
    done = {g: wait_all(client, ts) for g, ts in by_group.items()}
    for tasks in done.values():
        assert {t.status for t in tasks} == {TaskStatus.COMPLETED}
        assert most_at_once(tasks) == 2
    assert most_at_once([t for ts in done.values() for t in ts]) >= 4
    assert {t.group for t in done["a"]} == {"a"}


def test_a_big_backlog_in_one_group_does_not_delay_another_group(
    client: Client, start_worker
) -> None:
    backlog = [client.schedule("hello", group="A") for _ in range(400)]
    late = client.schedule("hello", group="B")
    start_worker(1)
    assert client.wait(late.id, 30).status is TaskStatus.COMPLETED
    b_start = ms(client.get(late.id).started_at)
    a_starts = [t.started_at for t in (client.get(b.id) for b in backlog) if t.started_at]
    # At most the one head of A's lane that the first claim took before B's (both due).
    assert len([at for at in a_starts if ms(at) < b_start]) <= 1


def test_nothing_starts_while_paused_and_the_backlog_resumes_in_order(
    client: Client, start_worker
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    early = [client.schedule("noop", at="+1s") for _ in range(3)]  # due only once paused
    assert client.pause(job="noop") is True
    assert client.pause(job="noop") is False
    later = [client.schedule("noop") for _ in range(10)]
    probe = client.schedule("hello", at="+1.5s")  # the worker claims past the paused ones
    assert client.wait(probe.id, 15).status is TaskStatus.COMPLETED
    held = [client.get(t.id) for t in early + later]
    assert {t.status for t in held} == {TaskStatus.PENDING}
    assert {client.waiting(t) for t in held} == {"paused (job noop)"}
    assert client.paused().keys() == {"job noop"}
    # Held tasks are listed as pending, and found by why they wait.
    pending = {t.id for t in client.tasks(status="pending")}
    assert pending >= {t.id for t in held}
    assert {t.id for t in client.tasks(waiting="paused (job noop)")} == {t.id for t in held}
    assert client.resume(job="noop") is True
    done = wait_all(client, early + later, 30)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    # In due order: the ten due at once first, then the three due a second later.
    starts = [ms(t.started_at) for t in sorted(done, key=lambda t: (ms(t.start_at), t.id))]
    assert starts == sorted(starts)
    assert client.paused() == {}


def test_pausing_a_group_holds_only_that_group(client: Client, start_worker) -> None:
    start_worker(4)
    wait_workers(client, 1)
    client.pause(group="tenant-1")
    held = [client.schedule("hello", group="tenant-1") for _ in range(3)]
    free = [client.schedule("hello", group="tenant-2") for _ in range(3)]
    assert {t.status for t in wait_all(client, free)} == {TaskStatus.COMPLETED}
    assert {client.get(t.id).status for t in held} == {TaskStatus.PENDING}
    client.resume(group="tenant-1")
    assert {t.status for t in wait_all(client, held)} == {TaskStatus.COMPLETED}


def test_a_task_over_its_limit_says_why_it_waits(client: Client, start_worker) -> None:
    start_worker(4)
    wait_workers(client, 1)
    first = client.schedule("flow_serial", {"seconds": 30})
    wait_until(lambda: client.get(first.id).status is TaskStatus.RUNNING, 15, "first running")
    second = client.schedule("flow_serial")
    probe = client.schedule("hello")
    assert client.wait(probe.id, 15).status is TaskStatus.COMPLETED
    assert client.waiting(client.get(second.id)) == "job concurrency 1/1 reached"
    with pytest.warns(CapacityWarning):
        big = client.schedule("heavy")  # 512 slots: more than the worker offers
    assert client.waiting(client.get(big.id)) == "no live instance has 512 slots"
    assert [t.id for t in client.tasks(waiting="concurrency")] == [second.id]
    client.cancel(first.id)
    assert client.wait(second.id, 15).status is TaskStatus.COMPLETED


def test_a_killed_worker_frees_its_unit_when_the_reaper_fails_its_task(
    client: Client, start_worker
) -> None:
    doomed = start_worker(4)
    wait_workers(client, 1)
    first = client.schedule("flow_serial", {"hold_first": True})
    wait_until(lambda: client.get(first.id).status is TaskStatus.RUNNING, 15, "first running")
    second = client.schedule("flow_serial")
    start_worker(4)
    wait_workers(client, 2)
    doomed.kill9()
    # The reaper fails the first attempt (the job retries once); its unit is freed, so
    # both the retry and the second task run, one after the other.
    retried = client.wait(first.id, 30)
    assert (retried.status, retried.attempt) == (TaskStatus.COMPLETED, 2)
    assert client.wait(second.id, 30).status is TaskStatus.COMPLETED


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "@job(concurrency=0): must be an integer >= 1"),
        ({"group_concurrency": "2"}, "@job(group_concurrency='2'): must be an integer >= 1"),
        ({"rate": "fast"}, "@job(rate='fast'): give starts per second, minute or hour"),
        ({"group_rate": "0/s"}, "@job(group_rate='0/s'): give starts per second"),
    ],
)
def test_a_bad_limit_is_a_one_line_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(JobDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        job(max_duration="1m", **options)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        *(({"group": g}, "--group") for g in ("", "x" * 129, "a\tb", "new\nline")),
        *(({"priority": p}, "--priority") for p in (101, -101)),
    ],
)
def test_a_bad_group_or_priority_is_refused_with_nothing_written(
    client: Client, raw_redis: redis.Redis, options: dict[str, Any], option: str
) -> None:
    before = raw_redis.dbsize()
    with pytest.raises(InvalidArgs, match=option):
        client.schedule("hello", **options)
    assert raw_redis.dbsize() == before


def test_pausing_an_unknown_job_is_an_error(client: Client, start_worker) -> None:
    start_worker(1)
    wait_workers(client, 1)
    with pytest.raises(UnknownJob, match="no_such_job"):
        client.pause(job="no_such_job")
    assert client.paused() == {}


def test_the_command_line_pauses_resumes_and_shows_why_a_task_waits(
    redis_server: RedisServer, namespace: str, client: Client, start_worker
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    common = ("--redis", redis_server.url, "--namespace", namespace)
    assert cli("pause", "--job", "noop", *common).stdout == "job noop paused\n"
    assert cli("pause", "--job", "noop", *common).stdout == "job noop was already paused\n"
    out = cli("schedule", "noop", "--group", "acme", "--jobs", str(JOBS), "--json", *common)
    task = orjson.loads(out.stdout)
    assert task["group"] == "acme"
    probe = client.schedule("hello")
    assert client.wait(probe.id, 15).status is TaskStatus.COMPLETED
    shown = orjson.loads(cli("show", task["id"], "--json", *common).stdout)
    assert (shown["status"], shown["waiting"]) == ("pending", "paused (job noop)")
    assert "paused" in cli("jobs", *common).stdout
    assert cli("resume", "--job", "noop", *common).stdout == "job noop resumed\n"
    assert client.wait(task["id"], 15).status is TaskStatus.COMPLETED
    bad = cli("pause", "--job", "noop", "--group", "acme", *common, check=False)
    assert (bad.returncode, bad.stderr) == (
        2,
        "error: give one of --job J, --group G or --series S\n",
    )
    unknown = cli("pause", "--job", "nope", *common, check=False)
    assert unknown.returncode != 0 and unknown.stderr.count("\n") == 1
    assert "unknown job 'nope'" in unknown.stderr


def test_a_rate_spaces_starts_evenly_over_all_workers_and_none_early(
    client: Client, start_worker
) -> None:
    start_worker(8)
    start_worker(8)
    wait_workers(client, 2)
    tasks = [client.schedule("flow_rated") for _ in range(60)]
    done = wait_all(client, tasks, 30)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    starts = sorted(ms(t.started_at) for t in done)
    assert 2900 <= starts[-1] - starts[0] <= 3500, starts[-1] - starts[0]
    # 20/s is one start every 50 ms of Redis time: none before its slot.
    assert all(b - a >= 50 for a, b in itertools.pairwise(starts)), starts


def test_a_group_rate_spaces_each_groups_starts_and_leaves_groups_apart(
    client: Client, start_worker
) -> None:
    start_worker(8)
    wait_workers(client, 1)
    by_group = {g: [client.schedule("flow_group_rated", group=g) for _ in range(8)] for g in "ab"}
    starts = {
        g: sorted(ms(t.started_at) for t in wait_all(client, ts)) for g, ts in by_group.items()
    }
    # 10/s per group: each group's starts 100 ms apart on Redis time, none early ...
    for group_starts in starts.values():
        assert all(b - a >= 100 for a, b in itertools.pairwise(group_starts)), starts
    # ... and the other group's starts fall between them: the rate is per group.
    merged = sorted(starts["a"] + starts["b"])
    assert min(b - a for a, b in itertools.pairwise(merged)) < 100, starts


def test_a_high_priority_task_scheduled_last_starts_next_and_a_low_one_last(
    client: Client, start_worker
) -> None:
    start_worker(1)
    wait_workers(client, 1)
    blocker = client.schedule("sleep", {"seconds": 0.5})
    wait_until(lambda: client.get(blocker.id).status is TaskStatus.RUNNING, 15, "the blocker")
    low = client.schedule("hello", priority=-5)
    backlog = [client.schedule("hello") for _ in range(10)]
    high = client.schedule("hello", priority=10)
    done = wait_all(client, [low, *backlog, high], 30)
    order = [t.id for t in sorted(done, key=lambda t: ms(t.started_at))]
    # Higher priority first; equal priority in due order.
    assert order == [high.id, *(t.id for t in backlog), low.id]
    assert client.get(high.id).priority == 10


def test_a_paused_series_makes_no_run_and_resumes_with_its_catch_up_policy(
    client: Client, start_worker
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    first = client.schedule("hello", every="1s")
    assert first.series is not None
    wait_until(lambda: client.get_series(first.series).runs >= 1, 15, "a first run")
    assert client.pause(series=first.series) is True
    held = client.get_series(first.series)
    assert held.paused and held.current
    runs = held.runs
    probe = client.schedule("hello", at="+2.5s")  # the worker claims past the held run
    assert client.wait(probe.id, 15).status is TaskStatus.COMPLETED
    assert client.get_series(first.series).runs == runs  # nothing ran for 2.5 grid slots
    current = client.get(held.current)
    assert (current.status, client.waiting(current)) == (
        TaskStatus.PENDING,
        f"paused (series {first.series})",
    )
    assert client.resume(series=first.series) is True
    done = client.wait(current.id, 15)
    assert done.status is TaskStatus.COMPLETED
    # The default catch-up policy (skip): the held run runs once, the slots missed while
    # paused are skipped, and the series goes on from the next slot of its grid.
    assert ms(done.started_at) - ms(done.start_at) > 1000  # it waited out the pause
    wait_until(lambda: client.get_series(first.series).skipped >= 1, 15, "skipped runs")
    assert not client.get_series(first.series).paused
    with pytest.raises(SeriesNotFound):
        client.pause(series="01M8Y4DEA80000000000000099")
    client.pause(series=first.series)
    client.cancel_series(first.series)  # an ended series is paused no more
    assert not client.get_series(first.series).paused
    with pytest.raises(SeriesEnded, match="has ended"):
        client.resume(series=first.series)


@pytest.mark.parametrize("options", [{"group": "g"}, {"priority": 5}])
def test_a_look_sees_a_due_laned_task(client: Client, options: dict[str, Any]) -> None:
    """An idle worker over several partitions looks before it claims (fanout.py): a task
    due in a lane must count as due there, as one in the due set does."""
    jobs = {"hello": msgspec.json.encode(client.job_definition("hello")).decode()}
    client.scripts.register("i1", ttl_ms=60_000, slots=4, host="h", pid=1, version="t", jobs=jobs)
    assert client.scripts.look("i1").due_now == 0
    client.schedule("hello", **options)
    looked = client.scripts.look("i1")
    assert (looked.due_now, looked.next_due) == (1, looked.now)
