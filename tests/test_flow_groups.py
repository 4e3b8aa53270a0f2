"""A group's limit, as the scripts keep it (lua/includes/flow.lua): a lane its limit holds
back is parked in place, in its open set at a score no claim reads, and its group's next
end brings it back. What a held task says, a limit taken away, and what it costs Redis.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.flow_drive import Bench, completed, definition, finish_loop
from perseid_jobs import Client
from perseid_jobs.core.models import JobDefinition
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import Claimed
from perseid_jobs.worker.flow_probe import held


def offer(client: Client, **limits: Any) -> None:
    """Instance i1 offers ``hello`` with these limits (registered again: republished)."""
    d = JobDefinition(slots=1, max_duration_ms=60_000, **limits)
    jobs = {"hello": msgspec.json.encode(d).decode()}
    client.scripts.register("i1", ttl_ms=60_000, slots=8, host="h", pid=1, version="t", jobs=jobs)


def claim_ids(client: Client) -> list[str]:
    reply = client.scripts.claim("i1", 8)
    assert isinstance(reply, Claimed), reply
    return [t.id for t in reply.tasks]


def test_a_task_its_group_holds_says_why_and_goes_at_the_groups_next_end(client: Client) -> None:
    offer(client, group_concurrency=1)
    first, second = (client.schedule("hello", group="A") for _ in range(2))
    other = client.schedule("hello", group="B")
    reply = client.scripts.claim("i1", 8)
    assert isinstance(reply, Claimed)
    assert sorted(t.id for t in reply.tasks) == sorted([first.id, other.id])
    assert client.waiting(client.get(second.id)) == "group A concurrency 1/1 reached"
    assert [t.id for t in client.tasks(waiting="group A")] == [second.id]
    assert held(client.redis, [client.keys])["group_concurrency"] == 1
    assert claim_ids(client) == []
    ended = client.scripts.finish("i1", completed([reply.tasks[0]]), claim_most=8)
    assert isinstance(ended.claim, Claimed)
    assert [t.id for t in ended.claim.tasks] == [second.id]


def test_a_group_limit_taken_away_lets_the_tasks_it_held_go(client: Client) -> None:
    offer(client, group_concurrency=1)
    first, second = (client.schedule("hello", group="A") for _ in range(2))
    assert claim_ids(client) == [first.id]
    assert claim_ids(client) == []
    offer(client)  # no limit now, while the first still runs
    assert claim_ids(client) == [second.id]


def test_a_group_limit_of_1_costs_few_redis_calls_per_task() -> None:
    """Claimed and finished as the benchmark does (bench/flow.py): the Redis commands per
    task at group_concurrency=1 over 200 groups, beside the same tasks with no limit. It
    was 14 more before lanes were parked in place; 5 now."""
    server = RedisServer().start()
    per: dict[str, float] = {}
    try:
        for job, groups, limit in (("plain", 0, 0), ("grouped", 200, 1)):
            b = Bench(server.url, {job: definition(group_concurrency=limit)})
            b.schedule(job, 2000, groups)
            d = finish_loop(b, 2000, 16, 4)
            b.close()
            per[job] = sum(n for cmd, (n, _) in d.profile.items() if cmd != "evalsha") / 2000
    finally:
        server.stop()
    assert per["grouped"] - per["plain"] <= 6, per


def lane_of(client: Client, task_id: str) -> str:
    lane = client.redis.hget(client.keys.task(task_id), "lane")
    assert lane
    return str(lane)


def test_a_lane_an_older_version_put_in_its_groups_gate_set_goes_at_the_groups_end(
    client: Client,
) -> None:
    """A version before parking in place held a full group's lanes in a gate set (in a rolling
    update, a worker of that version still does): the group's next end opens it too."""
    offer(client, group_concurrency=1)
    first, second = (client.schedule("hello", group="A") for _ in range(2))
    reply = client.scripts.claim("i1", 8)
    assert isinstance(reply, Claimed) and [t.id for t in reply.tasks] == [first.id]
    lane, keys = lane_of(client, second.id), client.keys
    gate = "g\t" + lane
    client.redis.zrem(keys.lanes, lane)  # the older version's park: out of the open set
    client.redis.zadd(keys.gate(gate), {lane: 1})
    client.redis.hset(keys.lane_gate, lane, gate)
    ended = client.scripts.finish("i1", completed(reply.tasks), claim_most=8)
    assert isinstance(ended.claim, Claimed)
    assert [t.id for t in ended.claim.tasks] == [second.id]


def test_a_lane_left_parked_with_room_in_its_group_comes_back_when_the_job_is_published(
    client: Client,
) -> None:
    """An end that went by without unparking (a reaper of an older version): the lane would
    wait for good; the job's next publish (a worker's start) brings it back."""
    offer(client, group_concurrency=1)
    first, second = (client.schedule("hello", group="A") for _ in range(2))
    reply = client.scripts.claim("i1", 8)
    assert isinstance(reply, Claimed) and [t.id for t in reply.tasks] == [first.id]
    client.scripts.finish("i1", completed(reply.tasks), claim_most=0)
    lane = lane_of(client, second.id)
    client.redis.zadd(client.keys.lanes, {lane: 10**15})  # left parked, its group empty
    assert claim_ids(client) == []
    offer(client, group_concurrency=1)
    assert claim_ids(client) == [second.id]
