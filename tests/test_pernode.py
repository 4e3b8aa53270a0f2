"""One script in every partition, one pipeline per node: the replies of calls one by one."""

from __future__ import annotations

import itertools

import msgspec
import redis

from perseid_jobs.core.models import JobDefinition
from perseid_jobs.store.partitions import Partitions
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import LeaseLapsed, Renewed
from perseid_jobs.store.scripts import Scripts, decode
from perseid_jobs.worker.fanout import PartitionedScripts
from perseid_jobs.worker.pernode import call_each


def registered(
    server: RedisServer, namespace: str, *, partitions: int, slots: int, poll_every_s: float
) -> PartitionedScripts:
    """Instance i1 registered in every partition, offering ``hello``."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    fan = PartitionedScripts(client, Partitions(namespace, partitions), poll_every_s=poll_every_s)
    jobs = {"hello": msgspec.json.encode(JobDefinition(slots=1, max_duration_ms=1000)).decode()}
    fan.register("i1", ttl_ms=60_000, slots=slots, host="h", pid=1, version="t", jobs=jobs)
    return fan


def spy_claims(fan: PartitionedScripts) -> list[int]:
    """The partitions that get a claim call from now on, in order (a spy on the raw calls)."""
    claims: list[int] = []
    for i, s in enumerate(fan.each):
        call = s.call
        s.call = (lambda c, n: lambda name, *a, **kw: (claims.append(n) if name == "claim"
                  else None) or c(name, *a, **kw))(call, i)  # type: ignore[method-assign]  # fmt: skip
    return claims


def test_a_heartbeat_in_every_partition_in_one_pipeline(
    redis_server: RedisServer, namespace: str
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    each = [Scripts(client, keys) for keys in Partitions(namespace, 3)]
    jobs = {"hello": msgspec.json.encode(JobDefinition(slots=1, max_duration_ms=1000)).decode()}
    for s in each[:2]:  # not in the third: its reply is a lapsed lease, as alone
        s.register("i1", ttl_ms=60_000, slots=2, host="h", pid=1, version="t", jobs=jobs)
    client.script_flush()  # as after a restart: the pipeline loads what it sends
    raw = call_each(client, each, "heartbeat", [["i1", 60_000]] * 3)
    replies = [decode(r, Renewed | LeaseLapsed) for r in raw]  # type: ignore[arg-type]
    assert [type(r) for r in replies] == [Renewed, Renewed, LeaseLapsed]
    sequential = [s.heartbeat("i1", 60_000) for s in each]
    assert [type(r) for r in sequential] == [type(r) for r in replies]


def test_the_poll_looks_everywhere_in_one_pipeline_and_claims_only_where_work_is_due(
    redis_server: RedisServer, namespace: str
) -> None:
    from perseid_jobs.store.script_io import Claimed, ScheduleArgs

    fan = registered(redis_server, namespace, partitions=4, slots=4, poll_every_s=0.0)
    assert isinstance(fan.claim("i1", 8, 4), Claimed)  # the first round asks everyone
    task = fan.each[2].schedule(ScheduleArgs(job="hello", args="{}", slots=1, max_ms=1000))
    claims = spy_claims(fan)
    reply = fan.claim("i1", 8, 4)
    assert isinstance(reply, Claimed) and [t.id for t in reply.tasks] == [task.task_id]  # type: ignore[union-attr]
    assert claims == [2]


def test_finishes_refill_in_place_and_every_partition_is_served(
    redis_server: RedisServer, namespace: str
) -> None:
    from perseid_jobs.core.models import TaskStatus
    from perseid_jobs.store.partitions import partition_of_id
    from perseid_jobs.store.script_io import Claimed, ScheduleArgs
    from perseid_jobs.worker.outcome import Outcome
    from perseid_jobs.worker.turns import ROTATE_EVERY

    fan = registered(redis_server, namespace, partitions=3, slots=2, poll_every_s=60.0)
    backlog = {i: 12 if i == 0 else 4 for i in range(3)}  # partition 0: the big backlog
    for i, count in backlog.items():
        for _ in range(count):
            fan.each[i].schedule(ScheduleArgs(job="hello", args="{}", slots=1, max_ms=1000))
    claims = spy_claims(fan)  # claims outside a finish
    first = fan.claim("i1", 2, 2)
    assert isinstance(first, Claimed)
    running, order, finishes = list(first.tasks), [], 0
    claims.clear()
    while running:
        task = running.pop(0)
        order.append(int(partition_of_id(task.id) or 0))
        done = Outcome(task.id, task.attempt, TaskStatus.COMPLETED, "0", "")
        reply = fan.finish("i1", [done], claim_most=1, free=1)
        finishes += 1
        assert isinstance(reply.claim, Claimed)
        running += reply.claim.tasks
    assert sorted(order) == sorted(i for i, n in backlog.items() for _ in range(n))
    # Refilled in place but one finish in ROTATE_EVERY: so few claims of their own.
    assert len(claims) <= finishes // ROTATE_EVERY + 3, claims
    # ... and no partition waits: each with work left is served within ROTATE_EVERY x P.
    for p in backlog:
        at = [-1] + [k for k, q in enumerate(order) if q == p]
        assert max(b - a for a, b in itertools.pairwise(at)) <= ROTATE_EVERY * 3, order
