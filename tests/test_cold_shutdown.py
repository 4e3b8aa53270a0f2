"""A second SIGTERM/SIGINT during a drain: a cold shutdown."""

from __future__ import annotations

import signal
import time

import pytest

from perseid_jobs import Client, TaskStatus

from .conftest import wait_until
from .test_zygote import alive, children


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_a_drain_kills_the_tasks_and_exits(
    client: Client, start_worker, sig: signal.Signals
) -> None:
    w = start_worker(4, "--drain-timeout", "60s")
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    (zygote,) = children(w.proc.pid)
    task_procs = wait_until(lambda: children(zygote), 5, "the task's process")
    w.proc.send_signal(sig)
    wait_until(lambda: "draining: 1 running" in w.output(), 5, "the drain")
    sent = time.monotonic()
    w.proc.send_signal(sig)
    assert w.proc.wait(10) == 0
    assert time.monotonic() - sent < 5  # not the 60 s drain timeout
    done = client.get(task.id)
    assert (done.status, done.reason) == (TaskStatus.FAILED, "worker shutdown")
    assert not any(alive(pid) for pid in task_procs)  # type: ignore[union-attr]
    assert "second signal: cold shutdown, killing 1 running tasks now" in w.output()
    assert client.workers() == []
