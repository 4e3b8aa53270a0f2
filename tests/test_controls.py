"""Issue 18 items 2, 3 and 6: trigger a series now, retry and bulk actions, tags.

Real Redis throughout; the runs that must really run do so on a real worker. The bulk
cases make their failed tasks with the real claim and finish scripts (as a worker would
report them), which a thousand task processes would take minutes to do on a small machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api import controls
from perseid_jobs.core.errors import (
    ConfigError,
    InvalidTag,
    SeriesEnded,
    TaskNotEnded,
    TriggerEnded,
)
from perseid_jobs.core.models import JobDefinition
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import Claimed
from perseid_jobs.store.scripts import Scripts
from perseid_jobs.worker.outcome import Outcome

from .conftest import JOBS, ROOT, WorkerProc, wait_until


def three(server: RedisServer, namespace: str) -> Client:
    """A client of a namespace of 3 partitions on the session's Redis."""
    return Client.from_url(server.url, namespace=namespace, jobs_dir=JOBS, partitions=3)


Snapshot = Callable[[str], dict[str, object]]


def _value(r: redis.Redis, key: str) -> object:
    kind = r.type(key)
    read: dict[str, Callable[[], object]] = {
        "string": lambda: r.get(key),
        "hash": lambda: r.hgetall(key),
        "zset": lambda: r.zrange(key, 0, -1, withscores=True),
        "set": lambda: r.smembers(key),
        "list": lambda: r.lrange(key, 0, -1),
        "stream": lambda: r.xrange(key),
    }
    return (kind, read[str(kind)]())


@pytest.fixture
def snapshot(raw_redis: redis.Redis) -> Snapshot:
    """Every key of a namespace (all its partitions) and its value, read by its type."""

    def take(namespace: str) -> dict[str, object]:
        keys = raw_redis.scan_iter(match="{" + namespace + "*", count=1000)
        return {str(k): _value(raw_redis, str(k)) for k in keys}

    return take


def finish_due(
    c: Client,
    status: TaskStatus = TaskStatus.FAILED,
    reason: str = "exit code 1: boom",
    next_start: str = "",
) -> int:
    """Claim every due task of every partition and report it ended so, as a worker does
    (``next_start``: the next start of a series run, as the worker computes it)."""
    definition = msgspec.json.encode(JobDefinition(slots=1, max_duration_ms=30_000)).decode()
    ended = 0
    for keys in c.partitions():
        s = c.scripts_in(keys)
        s.register("inst", ttl_ms=600_000, slots=100_000, host="h", pid=1, version="t",
                   jobs={"hello": definition, "fail": definition})  # fmt: skip
        while True:
            claimed = s.claim("inst", 256)
            assert isinstance(claimed, Claimed)
            if not claimed.tasks:
                break
            code = "0" if status is TaskStatus.COMPLETED else "1"
            outs = [Outcome(t.id, t.attempt, status, code, reason, next_start)
                    for t in claimed.tasks]  # fmt: skip
            s.finish("inst", outs, claim_most=0)
            ended += len(claimed.tasks)
    return ended


def fail_pending(c: Client) -> int:
    """Every due task reported failed."""
    return finish_due(c)


# -- trigger -------------------------------------------------------------------------------


def test_a_triggered_run_of_an_every_10s_series_runs_now_and_the_grid_does_not_move(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    first = client.schedule("hello", {"name": "grid"}, every="10s", at="+30s")
    assert first.series is not None and first.start_at is not None
    before = client.get_series(first.series)
    start_worker(2)
    run = client.trigger(first.series)
    assert run.metadata["triggered"] is True and run.series == first.series
    done = client.wait(run.id, timeout=15)
    assert done.status is TaskStatus.COMPLETED
    assert done.started_at is not None and done.started_at < first.start_at  # now, not +30s
    after = client.get_series(first.series)
    # The grid run is untouched: the same run, pending at the same start; nothing skipped.
    assert after.current == first.id and after.next_start == before.next_start
    assert client.get(first.id).status is TaskStatus.PENDING
    assert client.get(first.id).start_at == first.start_at
    assert after.skipped == 0 and after.status == "active"
    assert after.last_run == run.id and after.last_outcome == "completed"


def test_cancelling_a_triggered_run_leaves_its_series_running(client: Client) -> None:
    first = client.schedule("hello", every="10s", at="+1m")
    assert first.series is not None
    run = client.trigger(first.series)
    client.cancel(run.id)
    assert client.get(run.id).status is TaskStatus.CANCELLED
    assert client.get_series(first.series).status == "active"
    assert client.get(first.id).status is TaskStatus.PENDING


def test_a_trigger_respects_the_jobs_concurrency(
    client: Client, start_worker: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    # flow_serial: concurrency=1. A triggered run waits its turn behind a running task.
    blocker = client.schedule("flow_serial", {"seconds": 1.5})
    first = client.schedule("flow_serial", {"seconds": 0}, every="1h", at="+1h")
    assert first.series is not None
    start_worker(4)
    wait_until(lambda: client.get(blocker.id).status is TaskStatus.RUNNING, 15, "blocker runs")
    run = client.trigger(first.series)
    done = client.wait(run.id, timeout=20)
    ended = client.get(blocker.id)
    assert done.status is TaskStatus.COMPLETED and ended.ended_at is not None
    assert done.started_at is not None and done.started_at >= ended.ended_at


def test_trigger_of_a_cancelled_series_is_refused_writing_nothing(
    client: Client, snapshot: Snapshot
) -> None:
    first = client.schedule("hello", every="10s")
    assert first.series is not None
    client.cancel_series(first.series)
    before = snapshot(client.namespace)
    with pytest.raises(TriggerEnded) as err:
        client.trigger(first.series)
    assert isinstance(err.value, SeriesEnded)
    assert "has ended (cancelled): nothing to trigger" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert snapshot(client.namespace) == before


# -- retry ---------------------------------------------------------------------------------


def test_retry_of_a_failed_task_completes_and_links_retry_of(
    client: Client, start_worker: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    gate = tmp_path / "ready"
    failed = client.schedule("controls_gate", {"path": str(gate)}, tags={"team": "ops"})
    start_worker(2)
    assert client.wait(failed.id, timeout=15).status is TaskStatus.FAILED
    gate.touch()  # the cause is fixed; now retry
    retry = client.retry(failed.id)
    assert retry.retry_of == failed.id and retry.args == failed.args
    assert retry.tags == {"team": "ops"} and retry.job == "controls_gate"
    done = client.wait(retry.id, timeout=15)
    assert done.status is TaskStatus.COMPLETED
    old = client.get(failed.id)
    assert old.status is TaskStatus.FAILED and old.retried_by == retry.id  # stays as it ended
    assert old.reason is not None and "not ready" in old.reason
    again = client.retry(failed.id)  # the same request again makes nothing new
    assert again.id == retry.id and again.existed


def test_retry_of_a_running_task_is_refused_writing_nothing(
    client: Client, start_worker: Callable[..., WorkerProc], snapshot: Snapshot
) -> None:
    task = client.schedule("sleep", {"seconds": 30})
    worker = start_worker(1)
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    worker.kill9()  # nothing changes the task while the snapshots are taken
    before = snapshot(client.namespace)
    with pytest.raises(TaskNotEnded) as err:
        client.retry(task.id)
    assert "is running, not ended" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert snapshot(client.namespace) == before


def test_bulk_retry_of_1000_failed_tasks_run_twice_makes_1000_not_2000(
    redis_server: RedisServer, namespace: str
) -> None:
    c = three(redis_server, namespace)
    made = [c.schedule("hello", {"n": n}) for n in range(1000)]
    other = c.schedule("fail", {})  # another job's failure, not retried
    assert fail_pending(c) == 1001
    assert {m.id[10:12] for m in made} == {"00", "01", "02"}  # spread over the partitions
    assert c.retry_many(job="hello", dry_run=True) == 1000
    assert c.tasks(status="pending", limit=10) == []  # a dry run writes nothing
    assert c.retry_many(job="hello") == 1000
    assert c.retry_many(job="hello") == 0
    pending = c.tasks(status="pending", limit=5000)
    assert len(pending) == 1000
    assert {t.retry_of for t in pending} == {m.id for m in made}
    assert c.get(other.id).retried_by is None
    c.close()


def test_bulk_retry_since_takes_only_recent_failures(client: Client) -> None:
    old = client.schedule("hello", {"n": "old"})
    fail_pending(client)
    # Age the first failure by two hours on the finished index (as if it ended then).
    client.redis.zadd(client.keys.finished, {old.id: client.now_ms() - 7_200_000})
    client.redis.hset(client.keys.task(old.id), "ended_at", client.now_ms() - 7_200_000)
    new = client.schedule("hello", {"n": "new"})
    fail_pending(client)
    assert client.retry_many(job="hello", since=3600) == 1
    assert client.get(new.id).retried_by is not None and client.get(old.id).retried_by is None


def test_bulk_cancel_by_job_and_group_is_idempotent(
    redis_server: RedisServer, namespace: str
) -> None:
    c = three(redis_server, namespace)
    mine = [c.schedule("hello", {"n": n}, group="acme", at="+1h") for n in range(30)]
    theirs = [c.schedule("hello", {"n": n}, group="other") for n in range(5)]
    waits = c.schedule("hello", {"n": "child"}, group="other", after=mine[0].id)
    # Under a key a child lives in the key's partition: some of these wait across partitions.
    keyed = [c.schedule("hello", {"k": k}, key=f"child-{k}", after=mine[0].id) for k in range(6)]
    assert {t.id[10:12] for t in keyed} - {mine[0].id[10:12]}
    assert c.cancel_many(job="hello", group="acme", dry_run=True) == 30
    assert c.cancel_many(job="hello", group="acme") == 30
    assert c.cancel_many(job="hello", group="acme") == 0
    assert {c.get(t.id).status for t in mine} == {TaskStatus.CANCELLED}
    assert {c.get(t.id).status for t in theirs} == {TaskStatus.PENDING}
    for dependent in [waits, *keyed]:  # their parent was cancelled, in whichever partition
        child = c.get(dependent.id)
        assert child.status is TaskStatus.CANCELLED and mine[0].id in (child.reason or "")
    c.close()


def test_bulk_cancel_of_running_tasks_stops_them(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    tasks = [client.schedule("sleep", {"seconds": 30}) for _ in range(2)]
    start_worker(2)
    wait_until(
        lambda: all(client.get(t.id).status is TaskStatus.RUNNING for t in tasks), 15, "running"
    )
    assert client.cancel_many(job="sleep", status="running") == 2
    assert client.cancel_many(job="sleep", status="running") == 0  # asked already
    for t in tasks:
        assert client.wait(t.id, timeout=15).status is TaskStatus.CANCELLED


def test_bulk_actions_send_bounded_batches(client: Client) -> None:
    sent: list[int] = []

    class Counting(Scripts):
        def call(self, name: str, *args: object, client: object = None) -> object:
            if name == "bulk":
                sent.append(len(args) - 7)
            return super().call(name, *args, client=client)

    client._scripts_by_tag[client.keys.tag] = Counting(client.redis, client.keys)
    for n in range(120):
        client.schedule("hello", {"n": n})
    assert client.cancel_many(job="hello") == 120
    assert sent == [50, 50, 20] and controls.BULK_BATCH["cancel"] == 50
    sent.clear()
    assert client.retry_many(job="hello", status="cancelled") == 120
    assert sent == [25] * 4 + [20] and controls.BULK_BATCH["retry"] == 25


def test_bulk_bad_input_is_refused_writing_nothing(client: Client, snapshot: Snapshot) -> None:
    client.schedule("hello")
    before = snapshot(client.namespace)
    for call, text in [
        (lambda: client.retry_many(job="hello", status="pending"), "--status 'pending'"),
        (lambda: client.cancel_many(job="hello", status="failed"), "--status 'failed'"),
        (lambda: client.retry_many(job="hello", since=0), "--since 0"),
    ]:
        with pytest.raises(ConfigError) as err:
            call()
        assert text in str(err.value) and len(str(err.value).splitlines()) == 1
    assert snapshot(client.namespace) == before


# -- tags ----------------------------------------------------------------------------------


def test_tags_find_tasks_over_every_partition(redis_server: RedisServer, namespace: str) -> None:
    c = three(redis_server, namespace)
    acme = [c.schedule("hello", {"order": f"A-{n}"}, tags={"customer": "acme"}) for n in range(9)]
    prod = c.schedule("hello", {"order": "B-1"}, tags={"customer": "acme", "env": "prod"})
    c.schedule("hello", {"order": "C-1"}, tags={"customer": "zeta"})
    found = [t.id for t in c.tasks(tag="customer=acme")]
    assert set(found) == {t.id for t in [*acme, prod]}
    assert [i[:10] for i in found] == sorted((i[:10] for i in found), reverse=True)  # newest first
    assert [t.id for t in c.tasks(tag=["customer=acme", "env=prod"])] == [prod.id]
    assert c.tasks(tag="customer=nobody") == []
    assert [t.id for t in c.tasks(args_contains="B-1")] == [prod.id]
    assert c.get(prod.id).tags == {"customer": "acme", "env": "prod"}
    assert len(c.tasks(tag="customer=acme", limit=3)) == 3
    c.close()


def test_a_series_runs_carry_its_tags(client: Client) -> None:
    first = client.schedule("hello", every="1h", tags={"kind": "report"})
    assert first.series is not None
    run = client.trigger(first.series)
    assert run.tags == {"kind": "report"}
    later = str(client.now_ms() + 3_600_000)
    assert finish_due(client, TaskStatus.COMPLETED, "", next_start=later) == 2
    series = client.get_series(first.series)
    assert series.current not in (None, first.id, run.id)
    assert client.get(str(series.current)).tags == {"kind": "report"}  # the next grid run
    tagged = {t.id for t in client.tasks(tag="kind=report")}
    assert tagged == {first.id, run.id, series.current}


def test_tag_indexes_are_trimmed_with_the_tasks(client: Client) -> None:
    task = client.schedule("hello", tags={"batch": "b1"})
    fail_pending(client)
    index = client.keys.tagged("batch=b1")
    assert client.redis.zscore(index, task.id) is not None
    # Past the 7-day retention, as if it ended 8 days ago; the reaper trims it.
    client.redis.zadd(client.keys.finished, {task.id: client.now_ms() - 8 * 86_400_000})
    client.scripts.reap()
    assert not client.redis.exists(client.keys.task(task.id))
    assert not client.redis.exists(index)  # its only entry gone, the index with it


@pytest.mark.parametrize(
    ("tags", "cause"),
    [
        ({"": "v"}, "the key is not a name"),
        ({"k": ""}, "the value must be text"),
        ({"k": "a\nb"}, "control character"),
        ({"bad key": "v"}, "the key is not a name"),
        ({f"k{n}": "v" for n in range(17)}, "more than 16 tags"),
    ],
)
def test_malformed_tags_are_refused_writing_nothing(
    client: Client, snapshot: Snapshot, tags: dict[str, str], cause: str
) -> None:
    with pytest.raises(InvalidTag) as err:
        client.schedule("hello", tags=tags)
    assert cause in str(err.value) and len(str(err.value).splitlines()) == 1
    assert snapshot(client.namespace) == {}


def cli(*argv: str, server: RedisServer, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEID_")}
    common = ["--redis", server.url, "--namespace", namespace]
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", argv[0], *common, *argv[1:]],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip


def test_the_command_line(redis_server: RedisServer, namespace: str, snapshot: Snapshot) -> None:
    run = lambda *a: cli(*a, server=redis_server, namespace=namespace)  # noqa: E731
    bad = run("schedule", "hello", "--jobs", str(JOBS), "--tag", "customer")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert "--tag 'customer': no '='" in bad.stderr
    assert snapshot(namespace) == {}
    made = run("schedule", "hello", "--jobs", str(JOBS), "--tag", "customer=acme", "--tag", "a=b")
    task_id = made.stdout.strip()
    assert made.returncode == 0, made.stderr
    listed = run("tasks", "--tag", "customer=acme", "--json")
    assert [t["id"] for t in msgspec.json.decode(listed.stdout)] == [task_id]
    assert "a=b customer=acme" in run("show", task_id).stdout
    refused = run("retry", task_id)
    assert refused.returncode == 1 and "is pending, not ended" in refused.stderr
    assert run("cancel", "--job", "hello", "--dry-run").stdout == "1 task would be cancelled\n"
    assert run("cancel", "--job", "hello").stdout == "1 task cancelled\n"
    assert run("retry", "--job", "hello", "--status", "cancelled").stdout == "1 task retried\n"
    assert run("retry", "--job", "hello", "--status", "cancelled").stdout == "0 tasks retried\n"
    series = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS)
    first = series.schedule("hello", every="1h", at="+1h")
    assert first.series is not None
    triggered = run("trigger", first.series)
    assert triggered.returncode == 0 and series.get(triggered.stdout.strip()).metadata["triggered"]
    series.cancel_series(first.series)
    ended = run("trigger", first.series)
    assert ended.returncode == 1 and len(ended.stderr.splitlines()) == 1
    assert "nothing to trigger" in ended.stderr
    series.close()


def test_a_tag_filter_combines_with_the_others(client: Client) -> None:
    later = client.schedule("hello", {"order": "L-1"}, tags={"customer": "acme"}, at="+1h")
    now = client.schedule("hello", {"order": "N-1"}, tags={"customer": "acme"})
    client.schedule("hello", {"order": "L-2"}, at="+1h")
    assert [t.id for t in client.tasks(tag="customer=acme", waiting="due at")] == [later.id]
    assert [t.id for t in client.tasks(tag="customer=acme", args_contains="N-1")] == [now.id]
    assert client.tasks(tag="customer=acme", job="fail") == []
