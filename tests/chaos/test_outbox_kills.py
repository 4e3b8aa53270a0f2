"""Chains across partitions while workers are killed with SIGKILL: each child is settled
once, after its parent, whoever delivers (the finisher, or a reaper after it died)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from perseid_jobs import Client
from perseid_jobs.store.partitions import partition_of_id

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet, all_settled, read_attempts, slots_left, task_rows

pytestmark = pytest.mark.chaos

CHAINS = 150
KILLS = 8
PARTS = ("--partitions", "4")


def released(client: Client, child: str) -> list[int]:
    """Redis times (ms) of the child's `released` events."""
    keys = client.keys_of(child)
    assert keys is not None
    return [int(e.split("-")[0]) for e, f in client.redis.xrange(keys.events)
            if f.get("id") == child and f.get("event") == "released"]  # fmt: skip


def test_chains_across_partitions_survive_worker_kills_settled_once(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any, report: Any
) -> None:
    server = redis_servers()
    client = Client.from_url(server.url, namespace="obx", jobs_dir=JOBS, partitions=4)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(server.url, "obx", tmp_path, *PARTS)
    fleets.append(fleet)
    live = [fleet.start(4) for _ in range(3)]
    wait_workers(client, 3)
    pairs = schedule_chains_while_killing(client, fleet, live, records)
    wait_until(lambda: all_settled(client), 120, "every task to end")
    wait_until(lambda: outbox_left(client) == 0, 30, "every outbox emptied")

    parents, children = [p for p, _ in pairs], [c for _, c in pairs]
    rows = {i: r for i, r in zip(parents + children,
            task_rows(client, parents + children, "status", "ended_at"), strict=True)}  # fmt: skip
    attempts = read_attempts(records)
    late = 0
    for parent, child in pairs:
        assert partition_of_id(parent) != partition_of_id(child)
        assert rows[parent]["status"] == rows[child]["status"] == "completed"
        times = released(client, child)
        assert len(times) == 1, f"{child} released {len(times)} times"
        ended = int(rows[parent]["ended_at"] or 0)
        assert times[0] >= ended
        first = min(a.start for a in attempts[child])
        assert all(first > a.start for a in attempts[parent])  # the child ran after its parent
        late += times[0] - ended >= 1000  # delivered by a reaper: its finisher died first
    assert slots_left(client) == (0, 0)
    report("chains across partitions / SIGKILLs", chains=len(pairs), kills=KILLS,
           settled_once=True, delivered_late=late)  # fmt: skip


def outbox_left(client: Client) -> int:
    return sum(int(client.redis.zcard(k.outbox_at)) for k in client.partitions())


def schedule_chains_while_killing(
    client: Client, fleet: Fleet, live: list[Any], records: Path
) -> list[tuple[str, str]]:
    """CHAINS (parent, keyed child in another partition) while SIGKILLing KILLS workers."""
    pairs: list[tuple[str, str]] = []
    rng = random.Random(16)
    parts = client.partitions()

    def schedule_all() -> None:
        for n in range(CHAINS):
            args = {"dir": str(records), "seconds": round(rng.uniform(0.02, 0.1), 3)}
            parent = client.schedule("chaos_retry", args).id
            key = next(k for m in range(64) if parts.for_idempotency_key(k := f"c{n}.{m}")
                       != partition_of_id(parent))  # fmt: skip
            pairs.append((parent, client.schedule("chaos_retry", args, after=parent, key=key).id))

    scheduler = threading.Thread(target=schedule_all)
    scheduler.start()
    for _ in range(KILLS):
        time.sleep(0.4)
        victim = rng.choice(live)
        victim.kill9()
        live.remove(victim)
        live.append(fleet.start(4))
    scheduler.join()
    return pairs
