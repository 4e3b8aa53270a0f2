"""The Lua scripts, called directly, on real Redis and on the embedded fakeredis.

The demo's embedded default runs the same scripts, so each test here runs on
both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import msgspec
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.errors import Code, TaskNotFound
from perseid_jobs.core.models import JobDefinition
from perseid_jobs.core.recurrence import make_recurrence
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import (
    Claimed,
    ClaimedTask,
    Deregistered,
    LeaseLapsed,
    NextStart,
    Renewed,
)
from perseid_jobs.worker.outcome import Outcome

from .conftest import JOBS


@pytest.fixture(params=["redis", "fakeredis"])
def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[redis.Redis]:
    if request.param == "redis":
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    else:
        r = fakeredis.FakeRedis(decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def c(backend: redis.Redis, namespace: str) -> Client:
    return Client(backend, namespace=namespace, jobs_dir=JOBS)


def register(c: Client, inst: str, slots: int, jobs: tuple[str, ...] = ("hello", "heavy")) -> None:
    definitions = {}
    for name in jobs:
        d = c.job_definition(name)
        short = JobDefinition(slots=d.slots, max_duration_ms=d.max_duration_ms)
        definitions[name] = msgspec.json.encode(short).decode()
    c.scripts.register(
        inst, ttl_ms=15000, slots=slots, host="host", pid=1, version="test", jobs=definitions
    )


def claimed(c: Client, inst: str, n: int = 10) -> Claimed:
    reply = c.scripts.claim(inst, n)
    assert isinstance(reply, Claimed)
    return reply


def claim(c: Client, inst: str, n: int = 10) -> list[ClaimedTask]:
    return claimed(c, inst, n).tasks


def renewed(c: Client, inst: str) -> Renewed:
    reply = c.scripts.heartbeat(inst, 15000)
    assert isinstance(reply, Renewed)
    return reply


def finish(
    c: Client,
    inst: str,
    task_id: str,
    token: str,
    status: str = "completed",
    next_start: str = "",
    skipped: int = 0,
) -> int:
    outcome = Outcome(task_id, token, TaskStatus(status), "0", "", next_start, skipped)
    return c.scripts.finish(inst, [outcome], claim_most=0).codes[0]


def lapse(c: Client, inst: str) -> None:
    """Make the instance's lease lapse without waiting: its expiry moves to the epoch."""
    c.redis.zadd(c.keys.instances, {inst: 0})


def slots_used(c: Client, inst: str) -> int:
    return int(c.redis.hget(c.keys.instance(inst), "slots_used") or 0)


def test_claim_takes_due_tasks_in_order_within_free_slots_with_a_fencing_token(c: Client) -> None:
    register(c, "i1", 1024)
    ids = [c.schedule("heavy").id for _ in range(3)]
    got = claim(c, "i1")
    assert [r.id for r in got] == ids[:2]
    assert [r.attempt for r in got] == ["1", "1"]  # attempt = token
    assert slots_used(c, "i1") == 1024
    assert c.get(ids[2]).status.value == "pending"


def test_claim_says_when_the_next_task_is_due_to_the_microsecond(c: Client) -> None:
    register(c, "i1", 1)
    now_ms = c.now_ms()
    later = c.schedule("hello", at="+60s")
    reply = claimed(c, "i1", 1)
    assert reply.tasks == []  # nothing due yet
    assert reply.next_due == int(c.redis.hget(c.keys.task(later.id), "start_at"))
    assert 0 <= reply.now_us_past_ms < 1000  # microseconds past reply.now, Redis's millisecond
    assert now_ms <= reply.now < reply.next_due


def test_claim_leaving_work_due_wakes_the_other_sleepers_and_says_what_is_next(
    c: Client,
) -> None:
    register(c, "i1", 1)
    register(c, "i2", 1)
    first, second = c.schedule("hello").id, c.schedule("hello").id
    later = c.schedule("hello", at="+60s").id
    assert claim(c, "i2", 0) == []  # i2 looks, takes nothing, and sleeps until `later`
    for inst in ("i1", "i2"):
        c.redis.delete(c.keys.wake(inst))
    reply = claimed(c, "i1", 1)
    assert [r.id for r in reply.tasks] == [first]
    assert c.redis.llen(c.keys.wake("i2")) == 1  # `second` is due and i1 is full
    assert c.redis.llen(c.keys.wake("i1")) == 0  # not itself
    # Past the task still due, the next one to come: what i1 waits for.
    assert reply.next_due == int(c.redis.hget(c.keys.task(later), "start_at"))
    assert c.get(second).status.value == "pending"
    assert c.redis.zscore(c.keys.sleepers, "i2") is None  # woken: no longer sleeping
    assert c.redis.zscore(c.keys.sleepers, "i1") == reply.next_due


def test_claim_that_takes_all_it_read_still_sees_work_due_past_what_it_read(c: Client) -> None:
    register(c, "big", 1000)
    register(c, "other", 1)
    ids = [c.schedule("hello").id for _ in range(260)]  # more than one claim reads (256)
    later = c.schedule("hello", at="+60s").id
    assert claim(c, "other", 0) == []
    c.redis.delete(c.keys.wake("other"))
    reply = claimed(c, "big", 300)
    assert [r.id for r in reply.tasks] == ids[:256]
    assert c.redis.llen(c.keys.wake("other")) == 1  # four are still due
    assert reply.next_due == int(c.redis.hget(c.keys.task(later), "start_at"))
    # Nothing due left after the next claim: no one is woken, the next is `later`.
    c.redis.delete(c.keys.wake("other"))
    reply = claimed(c, "big", 300)
    assert [r.id for r in reply.tasks] == ids[256:]
    assert c.redis.llen(c.keys.wake("other")) == 0
    assert reply.next_due == int(c.redis.hget(c.keys.task(later), "start_at"))


def test_claim_leaves_a_task_too_big_or_not_offered_for_another_instance(c: Client) -> None:
    register(c, "small", 256, jobs=("hello", "heavy"))
    register(c, "nohello", 1024, jobs=("heavy",))
    heavy = c.schedule("heavy").id
    hello = c.schedule("hello").id
    assert [r.id for r in claim(c, "small")] == [hello]
    assert claim(c, "nohello")[0].id == heavy


def test_claim_by_an_instance_whose_lease_lapsed_is_refused(c: Client) -> None:
    register(c, "i1", 4)
    c.schedule("hello")
    lapse(c, "i1")
    assert c.scripts.claim("i1", 10) == LeaseLapsed()
    assert c.scripts.heartbeat("i1", 15000) == LeaseLapsed()


def test_finish_with_a_stale_token_changes_nothing(c: Client) -> None:
    register(c, "i1", 4)
    t = c.schedule("hello").id
    claim(c, "i1")
    assert finish(c, "i1", t, "2") == Code.STALE
    assert c.get(t).status.value == "running"
    assert finish(c, "i1", t, "1") == Code.OK
    assert c.get(t).status.value == "completed"
    assert slots_used(c, "i1") == 0
    assert finish(c, "i1", t, "1", "failed") == Code.STALE  # terminal is final
    assert c.get(t).status.value == "completed"


def test_stale_finish_after_a_reap_changes_nothing(c: Client) -> None:
    register(c, "i1", 4)
    register(c, "i2", 4)
    t = c.schedule("hello").id
    claim(c, "i1")
    lapse(c, "i1")
    assert c.scripts.reap().reaped == [t]
    failed = c.get(t)
    assert (failed.status.value, failed.reason) == ("failed", "instance i1 lost")
    assert c.redis.exists(c.keys.instance("i1")) == 0
    assert finish(c, "i1", t, "1") == Code.STALE
    assert c.get(t) == failed
    assert c.scripts.reap().reaped == []  # twice changes nothing


def test_task_past_its_hard_deadline_is_reaped_and_frees_its_slots(c: Client) -> None:
    register(c, "i1", 4)
    t = c.schedule("hello").id
    claim(c, "i1")
    c.redis.zadd(c.keys.running, {t: 1})  # deadline in the past
    assert c.scripts.reap().reaped == [t]
    assert c.get(t).reason == "timeout: no report from instance i1 by the hard deadline"
    assert slots_used(c, "i1") == 0


def test_reaped_series_run_gets_exactly_one_next_run(c: Client) -> None:
    register(c, "i1", 4)
    first = c.schedule("hello", every="1h")
    claim(c, "i1")
    lapse(c, "i1")
    reply = c.scripts.reap()
    assert reply.reaped == [] and [n.task_id for n in reply.needs] == [first.id]
    need = reply.needs[0]
    rec = msgspec.json.decode(need.spec, type=type(make_recurrence(every="1h")))
    assert rec.every_ms == 3_600_000 and int(need.origin) == int(need.start_at)
    given = [NextStart(need.task_id, str(int(need.start_at) + 3_600_000), 0)]
    assert c.scripts.reap(given).reaped == [first.id]
    assert c.scripts.reap(given).reaped == []
    runs = [t for t in c.tasks(limit=100) if t.series == first.series]
    assert sorted(t.status.value for t in runs) == ["failed", "pending"]


def test_cancel_of_a_running_task_flags_its_instance_and_wakes_it(c: Client) -> None:
    register(c, "i1", 4)
    t = c.schedule("hello").id
    claim(c, "i1")
    c.redis.delete(c.keys.wake("i1"))
    assert c.cancel(t).status.value == "running"
    assert c.redis.llen(c.keys.wake("i1")) == 1
    assert renewed(c, "i1").cancels == [t]
    assert finish(c, "i1", t, "1", "cancelled") == Code.OK
    assert renewed(c, "i1").cancels == []


def test_schedule_wakes_an_idle_instance_that_would_look_later(c: Client) -> None:
    register(c, "i1", 4)
    claim(c, "i1")  # nothing due: it will look again only when woken
    assert c.redis.llen(c.keys.wake("i1")) == 0
    c.schedule("hello", at="+1h")
    assert c.redis.llen(c.keys.wake("i1")) == 1  # its next look moves to the new due time
    claim(c, "i1")
    c.schedule("hello", at="+2h")  # later than its next look: no wake-up
    assert c.redis.llen(c.keys.wake("i1")) == 0


def test_dependents_are_released_on_completion_and_cancelled_on_failure(c: Client) -> None:
    register(c, "i1", 4)
    a = c.schedule("hello").id
    b = c.schedule("hello", after=a).id
    d = c.schedule("hello").id
    e = c.schedule("hello", after=d).id
    claim(c, "i1")
    assert finish(c, "i1", a, "1") == Code.OK
    assert finish(c, "i1", d, "1", "failed") == Code.OK
    assert c.get(b).status.value == "pending" and c.get(b).start_at is not None
    assert (c.get(e).status.value, c.get(e).reason) == ("cancelled", f"dependency {d} failed")


def test_deregister_fails_what_the_instance_still_held(c: Client) -> None:
    register(c, "i1", 4)
    t = c.schedule("hello").id
    claim(c, "i1")
    assert c.scripts.deregister("i1", "worker shutdown") == Deregistered(failed=1, needs=[])
    assert (c.get(t).status.value, c.get(t).reason) == ("failed", "worker shutdown")
    assert c.workers() == []


def test_a_repeated_schedule_request_returns_the_first_task_not_a_second(c: Client) -> None:
    first = c.schedule("hello", {"n": 1}, request_id="req-1")
    again = c.schedule("hello", {"n": 1}, request_id="req-1")
    other = c.schedule("hello", {"n": 1}, request_id="req-2")
    assert again.id == first.id and not again.existed
    assert other.id != first.id
    assert c.redis.zcard(c.keys.due) == 2
    scheduled = [e for _, e in c.redis.xrange(c.keys.events) if e["event"] == "scheduled"]
    assert [e["id"] for e in scheduled] == [first.id, other.id]
    ttl = c.redis.pttl(c.keys.request("req-1"))
    assert 0 < ttl <= 120_000


def test_schedule_returns_the_stored_task_from_its_one_script_call(
    c: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    c.schedule("hello", at="+1h")  # loads the script, if the server did not have it
    sent: list[str] = []
    execute = c.redis.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(*args, **options)

    monkeypatch.setattr(c.redis, "execute_command", counting)
    task = c.schedule("hello", {"n": 1}, at="+1h", key="k-one-call")
    again = c.schedule("hello", {"n": 1}, at="+1h", key="k-one-call")
    monkeypatch.undo()
    # The job's definition from the catalog, then the script; no read-back of the task.
    assert sent == ["HGET", "EVALSHA", "HGET", "EVALSHA"]
    assert task == c.get(task.id)
    assert (task.status, task.args, task.existed) == (TaskStatus.PENDING, {"n": 1}, False)
    assert (again.id, again.args, again.existed) == (task.id, {"n": 1}, True)


def test_a_repeated_request_whose_task_was_trimmed_says_the_task_is_not_found(c: Client) -> None:
    first = c.schedule("hello", request_id="req-gone")
    c.redis.delete(c.keys.task(first.id))  # ended and trimmed by retention since
    with pytest.raises(TaskNotFound):
        c.schedule("hello", request_id="req-gone")


def test_a_repeated_series_request_makes_one_series(c: Client) -> None:
    first = c.schedule("hello", every="1m", request_id="req-s")
    again = c.schedule("hello", every="1m", request_id="req-s")
    assert again.id == first.id
    assert c.redis.zcard(c.keys.series_index) == 1
