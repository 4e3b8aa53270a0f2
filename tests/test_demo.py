"""The demo: the example jobs end to end, counts from Redis, a view that fits 80 columns,
and a user's Redis left as the demo found it (issue 13, item 14)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rich.console import Console

from perseid_jobs import Client
from perseid_jobs.cli.demo_view import DemoState, live_view
from perseid_jobs.store.redisproc import RedisServer

from .conftest import EXAMPLE_JOBS, WorkerProc, wait_workers

ANSI = re.compile(r"\x1b\[")


def demo(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "perseid_jobs", "demo", "--jobs", str(EXAMPLE_JOBS), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A Redis of this test alone, holding some keys of its user."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(directory=tmp_path / "redis").start()
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.set("user:key", "mine")
    r.hset("{perseid}:jobs", "theirs", "{}")  # another deployment's namespace
    r.url = server.url  # type: ignore[attr-defined]
    yield r
    r.close()
    server.stop()


def test_demo_on_embedded_fakeredis_runs_the_examples_and_stops_cleanly(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--duration", "6", "--backend", "fake")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "an embedded fakeredis server" in out
    assert "exit code 1: ValueError: a demo failure" in out
    assert "timeout after 2s" in out
    assert "cancelled by the job (exit 100)" in out
    assert "Stopped the workers" in out
    assert not ANSI.search(out), "stdout is not a terminal: plain lines only"
    # One id per series, the one the series table lists.
    scheduled = set(re.findall(r"series (\w{26})\n", out))
    listed = set(re.findall(r"^  series (\w{26}) ", out, re.MULTILINE))
    assert len(scheduled) == 2 and scheduled == listed, out
    uploaded = {
        p.parent.parent.parent.parent.name for p in (tmp_path / "var/bucket").rglob("*.log")
    }
    assert {"hello", "fail", "heavy", "cancel_self"} <= uploaded


def test_demo_leaves_the_users_redis_as_it_found_it(own_redis: redis.Redis, tmp_path: Path) -> None:
    before = {k: own_redis.type(k) for k in own_redis.keys("*")}
    proc = demo(tmp_path, "--duration", "4", env={"PERSEID_REDIS_URL": own_redis.url})  # type: ignore[attr-defined]
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    last_counts = [line for line in out.splitlines() if "] pending:" in line][-1]
    assert "failed: 2   cancelled: 1" in last_counts, out  # fail, timeout; cancel_self
    assert {k: own_redis.type(k) for k in own_redis.keys("*")} == before
    assert own_redis.get("user:key") == "mine"


def test_ctrl_c_stops_the_workers_and_removes_the_namespace(
    own_redis: redis.Redis, tmp_path: Path
) -> None:
    before = set(own_redis.keys("*"))
    proc = demo(tmp_path, env={"PERSEID_REDIS_URL": own_redis.url})  # type: ignore[attr-defined]
    assert proc.stdout is not None
    first = proc.stdout.readline()
    namespace = re.search(r"namespace (perseid-demo-\w+)", first)
    assert namespace, first
    while "Scheduled:" not in proc.stdout.readline():
        pass
    client = Client.from_url(own_redis.url, namespace=namespace[1])  # type: ignore[attr-defined]
    pids = [i.pid for i in client.workers()]
    client.close()
    assert len(pids) == 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"removed namespace {namespace[1]}" in out
    assert set(own_redis.keys("*")) == before
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_counts_cover_every_task_and_failures_stay_in_view(
    client: Client, raw_redis: redis.Redis, start_worker: Callable[..., WorkerProc]
) -> None:
    # A longer lease than the fixture's: on a loaded machine a lapsed lease kills tasks.
    start_worker(8, "--heartbeat", "1s", "--lease-ttl", "10s")
    wait_workers(client, 1)
    first = [client.schedule("fail", {"message": "a demo failure"}).id]
    first.append(client.schedule("cancel_self").id)
    series = client.schedule("hello", every="1h", key="hourly").series
    # More than the newest 200 the demo used to count, all ending after the failure.
    later = [client.schedule("hello", {"name": f"n{i}"}).id for i in range(250)]
    for tid in first + later:
        assert client.wait(tid, 60).status.terminal
    state = DemoState(client)
    state.poll()
    truth: dict[str, int] = {}
    for key in raw_redis.scan_iter(match=f"{client.keys.prefix}task:*", count=1000):
        status = raw_redis.hget(key, "status")
        truth[status] = truth.get(status, 0) + 1
    counts = {k: v for k, v in state.counts().items() if v}
    assert counts == truth and sum(counts.values()) == 2 + 1 + 250 + 1, (counts, truth)
    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    console.print(live_view(state, "header"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert first[0] in text and "exit code 1: ValueError: a demo failure" in text, text
    assert first[1] in text and series is not None and series in text, text
