"""Replies lost between Redis and a worker: scripts ran, the worker never heard back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from perseid_jobs import Client

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet, all_settled, overlapping, read_attempts, slots_left, task_rows
from .proxy import LossyProxy

pytestmark = pytest.mark.chaos

TASKS = 400
TIMING = ("--heartbeat", "0.5s", "--lease-ttl", "5s", "--reap-interval", "0.5s")


def test_claims_whose_reply_was_lost_are_run_not_orphaned(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any, report: Any
) -> None:
    server = redis_servers()
    proxy = LossyProxy(server.port)
    client = Client.from_url(server.url, namespace="lossy", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(proxy.url, "lossy", tmp_path, *TIMING)
    fleets.append(fleet)
    workers = [fleet.start(4) for _ in range(2)]
    wait_workers(client, 2)

    ids: list[str] = []

    def schedule_all() -> None:
        for _ in range(TASKS):
            ids.append(client.schedule("chaos_record", {"dir": str(records), "seconds": 0.03}).id)
            time.sleep(0.005)

    scheduler = threading.Thread(target=schedule_all)
    scheduler.start()
    for _ in range(3):
        time.sleep(0.6)
        proxy.drop_replies(1.0)
        time.sleep(1.0)
    scheduler.join()
    # An orphan (claimed, never started) would stay running until the hard deadline,
    # max duration + 60 s: far past this wait.
    wait_until(lambda: all_settled(client), 30, "every task to end")
    proxy.close()

    rows = task_rows(client, ids, "status", "attempt")
    attempts = read_attempts(records)
    outputs = "".join(w.output() for w in workers)
    used, held = slots_left(client)
    report(
        "lost replies (3 windows of 1 s)",
        tasks=len(ids),
        replies_lost=proxy.dropped,
        adopted=outputs.count("reply was lost"),
        stale_reports=outputs.count("was stale"),
        completed=sum(r["status"] == "completed" for r in rows),
        doubled=sum(len(a) > 1 for a in attempts.values()),
        overlapping=overlapping(attempts),
        slots_left=used,
    )
    assert proxy.dropped > 0
    assert all(r["status"] == "completed" and r["attempt"] == "1" for r in rows)
    assert all(len(attempts.get(i, [])) == 1 for i in ids)
    assert (used, held) == (0, 0)
    assert "fenced" not in outputs


def test_a_schedule_whose_reply_was_lost_is_retried_without_a_second_task(
    redis_servers: Any, report: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_servers()
    proxy = LossyProxy(server.port)
    client = Client.from_url(proxy.url, namespace="lossy-schedule", jobs_dir=JOBS)
    calls = 200
    real_call = client.scripts.call
    made = 0

    def call_losing_some_replies(name: str, *args: Any, **kwargs: Any) -> Any:
        # Every tenth schedule script runs in Redis but its reply is lost (the window is
        # shorter than redis-py's retries, 3 from 50 ms, so the call is sent again).
        nonlocal made
        made += name == "schedule"
        if name == "schedule" and made % 10 == 5:
            proxy.drop_replies(0.03)
        return real_call(name, *args, **kwargs)

    monkeypatch.setattr(client.scripts, "call", call_losing_some_replies)
    try:
        ids = [client.schedule("hello", at="+1h").id for _ in range(calls)]
        due = client.redis.zrange(client.keys.due, 0, -1)
    finally:
        client.close()
        proxy.close()
    report(
        "schedule replies lost",
        calls=calls,
        replies_lost=proxy.dropped,
        tasks_made=len(due),
        distinct_ids=len(set(ids)),
    )
    assert proxy.dropped >= calls // 10
    assert len(set(ids)) == calls
    assert sorted(due) == sorted(ids)  # one task per call: none doubled by the resend
