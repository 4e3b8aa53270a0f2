"""Durable scheduling: the schedule returns once a replica has the task (WAIT), real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from perseid_jobs import Client
from perseid_jobs.core.errors import NotDurable
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, wait_until
from .test_cli import cli


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    for name in ("primary", "replica"):
        (tmp_path / name).mkdir()
    primary = RedisServer(directory=tmp_path / "primary").start()
    replica = RedisServer(
        directory=tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    ).start()
    watch = redis.Redis(port=replica.port, decode_responses=True)
    wait_until(
        lambda: watch.info("replication").get("master_link_status") == "up",
        what="the replica linked to its primary",
    )
    watch.close()
    yield primary, replica
    replica.stop()
    primary.stop()


def test_a_durable_schedule_returns_once_the_replica_has_the_task(
    primary_and_replica: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    primary, replica = primary_and_replica
    client = Client.from_url(primary.url, namespace=namespace, jobs_dir=JOBS)
    on_replica = redis.Redis(port=replica.port, decode_responses=True)
    try:
        task = client.schedule("hello", {"name": "Ada"}, at="+1h", durable=True)
        # No waiting here: WAIT returned only once the replica had processed the write.
        assert on_replica.hget(client.keys.task(task.id), "job") == "hello"
        assert on_replica.zscore(client.keys.due, task.id) is not None
    finally:
        on_replica.close()
        client.close()


def test_a_durable_schedule_no_replica_confirms_raises_and_the_task_stands(
    redis_server: RedisServer, client: Client
) -> None:
    with pytest.raises(NotDurable) as raised:
        client.schedule("hello", at="+1h", durable=True, durable_timeout=0.2)
    task_id = raised.value.task_id
    assert f"task {task_id} is stored on the primary" in str(raised.value)
    assert client.get(task_id).status == "pending"


def test_durable_on_the_command_line_without_a_replica_exits_4_with_one_line(
    redis_server: RedisServer, namespace: str
) -> None:
    out = cli("schedule", "hello", "--durable", "--durable-timeout", "0.2", "--jobs", str(JOBS),
              "--redis", redis_server.url, "--namespace", namespace, check=False)  # fmt: skip
    assert out.returncode == 4
    assert len(out.stderr.strip().splitlines()) == 1
    assert "no replica confirmed it within 0.2s" in out.stderr
