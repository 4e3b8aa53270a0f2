"""What a schedule request means, whatever the timing: the interval floor, ``after`` a task
that already ended, idempotency keys bound to one request, a start in the past.

The scripts are driven directly (register, claim, finish as a worker would) on the
session's real Redis, so a parent's end is placed exactly before or after a request.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import redis

from perseid_jobs import Client, DependencyEndedWarning, PastStartWarning, TaskStatus
from perseid_jobs.core.errors import Code, InvalidTime, KeyConflict
from perseid_jobs.core.models import JobDefinition, dt_to_ms
from perseid_jobs.store.script_io import Claimed
from perseid_jobs.worker.outcome import Outcome

from .conftest import JOBS


def register(c: Client, inst: str = "i1", slots: int = 8) -> None:
    jobs = {}
    for name in ("hello", "sleep"):
        d = c.job_definition(name)
        encoded = msgspec.json.encode(JobDefinition(slots=1, max_duration_ms=d.max_duration_ms))
        jobs[name] = encoded.decode()
    c.scripts.register(inst, ttl_ms=60_000, slots=slots, host="host", pid=1, version="t", jobs=jobs)


def run_to_end(c: Client, task_id: str, status: str, next_start: str = "") -> None:
    """Claim the due tasks and report ``task_id`` ended with ``status`` (others stay running)."""
    if status == "cancelled" and c.get(task_id).status is TaskStatus.PENDING:
        c.cancel(task_id)
        return
    reply = c.scripts.claim("i1", 100)
    assert isinstance(reply, Claimed) and task_id in [r.id for r in reply.tasks]
    attempt = str(c.get(task_id).attempt)
    outcome = Outcome(task_id, attempt, TaskStatus(status), "0", "", next_start)
    assert c.scripts.finish("i1", [outcome], claim_most=0).codes == [Code.OK]


def snapshot(r: redis.Redis, namespace: str) -> dict[str, Any]:
    """Every key of the namespace with its serialized value: equal means nothing written."""
    keys = sorted(r.scan_iter(match="{" + namespace + "}*", count=1000))
    return {k: r.dump(k) for k in keys}


@pytest.fixture
def raw(redis_server: Any) -> Any:
    r = redis.Redis.from_url(redis_server.url)  # bytes: DUMP output is binary
    yield r
    r.close()


# -- the interval floor --------------------------------------------------------------------
@pytest.mark.parametrize("every", ["1ms", "999ms", 0.5, "PT0.5S"])
def test_an_interval_under_one_second_is_refused_and_writes_nothing(
    client: Client, raw: redis.Redis, namespace: str, every: str | float
) -> None:
    with pytest.raises(InvalidTime, match="under the 1s floor") as caught:
        client.schedule("hello", every=every)
    assert "\n" not in str(caught.value)
    assert snapshot(raw, namespace) == {}
    assert client.schedule("hello", every="1s").series  # the floor itself is fine


# -- after a task that already ended -------------------------------------------------------
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_after_gives_the_same_outcome_whether_the_parent_ends_before_or_after(
    client: Client, status: str
) -> None:
    register(client)
    parent = client.schedule("hello").id
    early = client.schedule("hello", after=parent).id  # waits, settled by the parent's end
    run_to_end(client, parent, status)
    if status == "completed":
        late = client.schedule("hello", after=parent)
    else:
        with pytest.warns(DependencyEndedWarning, match=f"dependency {parent} {status}") as w:
            late = client.schedule("hello", after=parent)
        assert len(w) == 1 and "\n" not in str(w[0].message)
    a, b = client.get(early), client.get(late.id)
    assert (b.status, b.reason, b.start_after) == (a.status, a.reason, a.start_after)
    assert late == b  # what schedule returned is what is stored
    if status == "completed":
        assert b.status is TaskStatus.PENDING
        assert client.redis.zscore(client.keys.due, late.id) is not None  # due, not blocked
        assert client.redis.zscore(client.keys.blocked, late.id) is None
        assert dt_to_ms(b.start_at) <= client.now_ms()
    else:
        assert (b.status, b.reason) == (TaskStatus.CANCELLED, f"dependency {parent} {status}")
        assert client.redis.zscore(client.keys.finished, late.id) is not None
    assert not client.redis.exists(client.keys.waiting(parent))


def test_a_task_created_cancelled_does_not_hold_its_key(client: Client) -> None:
    register(client)
    parent = client.schedule("hello").id
    run_to_end(client, parent, "failed")
    with pytest.warns(DependencyEndedWarning):
        first = client.schedule("hello", after=parent, key="k-dep")
    assert client.redis.hget(client.keys.idem, "k-dep") is None
    assert first.status is TaskStatus.CANCELLED


def test_after_a_run_of_a_series_follows_each_run_even_once_that_run_ended(
    client: Client,
) -> None:
    register(client)
    first = client.schedule("hello", every="1h")
    pending_follower = client.schedule("hello", after=first.id)  # before the run ends
    later = str(client.now_ms() + 3_600_000)
    run_to_end(client, first.id, "completed", next_start=later)
    parent_series = next(s for s in client.series() if s.id == first.series)
    late_follower = client.schedule("hello", after=first.id)  # after it ended
    for follower in (pending_follower, late_follower):
        assert follower.series and follower.series != first.series
        s = next(s for s in client.series() if s.id == follower.series)
        assert (s.status, s.follows) == ("active", first.series)
        runs = [t for t in client.tasks(limit=1000) if t.series == follower.series]
        # One run for the run it was scheduled after (released: due), one waiting on the
        # series' next run.
        assert sorted((t.start_after, t.status) for t in runs) == sorted(
            [(first.id, TaskStatus.PENDING), (parent_series.current, TaskStatus.PENDING)]
        )
        waiting = client.redis.smembers(client.keys.waiting(parent_series.current))
        assert s.current in waiting


# -- idempotency keys name one request -----------------------------------------------------
BASE: dict[str, Any] = {"job": "hello", "args": {"n": 1, "m": [1, 2]}}
VARIANTS = [
    ({"job": "sleep"}, "job"),
    ({"args": {"n": 2, "m": [1, 2]}}, "--args"),
    ({"args": {"n": 1, "m": [2, 1]}}, "--args"),
    ({"at": "+2h"}, "--at"),
    ({"at": "2030-01-01T00:00:00Z"}, "--at"),
    ({"every": "1h"}, "recurrence"),
    ({"after": "PARENT"}, "--after"),
]


def schedule(c: Client, req: dict[str, Any], **kw: Any) -> Any:
    req = {**req, **kw}
    return c.schedule(req.pop("job"), req.pop("args"), **req)


@pytest.mark.parametrize(("change", "named"), VARIANTS, ids=[n for _, n in VARIANTS])
def test_a_key_reused_for_a_different_request_is_refused_and_writes_nothing(
    client: Client, raw: redis.Redis, namespace: str, change: dict[str, Any], named: str
) -> None:
    parent = client.schedule("hello", at="+1h").id
    held = schedule(client, BASE, key="k")
    before = snapshot(raw, namespace)
    change = {k: (parent if v == "PARENT" else v) for k, v in change.items()}
    with pytest.raises(KeyConflict) as caught:
        schedule(client, {**BASE, **change}, key="k")
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert f"--key 'k' is held by task {held.id}" in message and named in message
    assert [named] == [d.split(" ")[0] for d in caught.value.differs]
    assert snapshot(raw, namespace) == before


def test_the_same_request_under_a_key_gets_the_task_it_made(client: Client) -> None:
    held = schedule(client, BASE, key="k")
    again = client.schedule("hello", {"m": [1, 2], "n": 1}, key="k")  # keys in another order
    assert (again.id, again.existed) == (held.id, True)
    later = client.schedule("hello", at="+1h", key="k2")
    assert client.schedule("hello", at="+60m", key="k2").id == later.id  # a delay spelt anew


def test_a_series_key_reused_with_another_interval_is_refused(client: Client) -> None:
    five = client.schedule("hello", every="5s", at="+1h", key="every")
    with pytest.raises(KeyConflict, match=f"task {five.id} of series {five.series}.*recurrence"):
        client.schedule("hello", every="7s", at="+1h", key="every")
    assert client.schedule("hello", every="5000ms", at="+1h", key="every").existed
    assert [s.every for s in client.series()] == ["5s"]


def test_a_key_held_without_a_fingerprint_still_answers(client: Client) -> None:
    held = client.schedule("hello", at="+1h", key="old")
    client.redis.hdel(client.keys.task(held.id), "fp")  # as an older client stored it
    assert client.schedule("sleep", at="+1h", key="old").id == held.id


# -- a start in the past -------------------------------------------------------------------
def test_a_start_in_the_past_warns_by_redis_time_and_runs_now(client: Client) -> None:
    past = datetime.fromtimestamp((client.now_ms() - 90_000) / 1000, UTC)
    with pytest.warns(PastStartWarning, match=r"is 1m30s ago by Redis time; runs now") as w:
        task = client.schedule("hello", at=past)
    assert len(w) == 1 and "\n" not in str(w[0].message)
    assert w[0].filename == __file__  # pointed at the caller of schedule, not inside it
    assert client.redis.zscore(client.keys.due, task.id) < client.now_ms() - 80_000
    with pytest.warns(PastStartWarning, match="ago"):
        client.schedule("hello", every="1h", at=past)
    # A delay, or an absolute start later than Redis now, says nothing.
    client.schedule("hello", at="+1s")
    client.schedule("hello", at=datetime.fromtimestamp(client.now_ms() / 1000 + 60, UTC))


# -- the command line ----------------------------------------------------------------------
def cli(url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["schedule", *args, "--redis", url, "--namespace", namespace, "--jobs", str(JOBS)]
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *argv], capture_output=True, text=True, timeout=60
    )


def test_the_command_line_prints_each_notice_or_refusal_on_one_line(
    client: Client, redis_server: Any, namespace: str
) -> None:
    url = redis_server.url
    parent = client.schedule("hello", at="+1h").id
    client.cancel(parent)
    dep = cli(url, namespace, "hello", "--after", parent)
    assert dep.returncode == 0, dep.stderr
    assert dep.stderr.splitlines() == [
        f"warning: --after {parent}: that task was already cancelled, so task"
        f" {dep.stdout.strip()} was created cancelled (dependency {parent} cancelled)"
    ]
    past = cli(url, namespace, "hello", "--at", "2020-01-01T00:00:00Z")
    assert past.returncode == 0, past.stderr
    [line] = past.stderr.splitlines()
    assert line.startswith("warning: --at 2020-01-01T00:00:00.000Z is ")
    assert line.endswith(" ago by Redis time; runs now")
    held = cli(url, namespace, "hello", "--key", "k", "--at", "+1h")
    other = cli(url, namespace, "sleep", "--key", "k", "--at", "+1h")
    assert other.returncode == 2 and other.stdout == ""
    assert other.stderr.splitlines() == [
        f"error: --key 'k' is held by task {held.stdout.strip()}, scheduled with a different"
        f" job: use another key, or free this one (`perseid-jobs cancel {held.stdout.strip()}`)"
    ]
    fast = cli(url, namespace, "hello", "--every", "1ms")
    assert fast.returncode == 2 and len(fast.stderr.splitlines()) == 1
    assert "under the 1s floor" in fast.stderr
