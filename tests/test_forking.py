"""How the zygote forks: libc's fork runs the handlers a task needs, and only where it is safe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from perseid_jobs.launch.forking import PLAIN_FORK_ENV
from perseid_jobs.launch.protocol import Exited
from perseid_jobs.worker.zygote_client import ZygoteClient

from .test_zygote import events_until_exit, log_lines, request

# Forks two children through perseid_jobs.launch.forking; each prints what the handlers left.
_FORK_TWICE = """
import os, sys
from perseid_jobs.launch import forking
if "--late" not in sys.argv:
    forking.record()
import random, threading
if "--late" in sys.argv:
    forking.record()
if "--thread" in sys.argv:
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
order = []
os.register_at_fork(before=lambda: order.append("before1"),
                    after_in_parent=lambda: order.append("parent1"),
                    after_in_child=lambda: order.append("child1"))
os.register_at_fork(before=lambda: order.append("before2"),
                    after_in_parent=lambda: order.append("parent2"),
                    after_in_child=lambda: order.append("child2"))
print(forking.choose(), flush=True)
for _ in range(2):
    order.clear()
    pid = forking.fork()
    if pid == 0:
        print(random.random(), order, os.getpid(), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent", order, flush=True)
"""


def fork_twice(*flags: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _FORK_TWICE, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_libc_fork_runs_the_recorded_handlers_as_os_fork_does() -> None:
    mode, child1, parent1, child2, parent2 = fork_twice()
    assert mode == "libc"
    (value1, rest1), (value2, rest2) = (c.split(" ", 1) for c in (child1, child2))
    # random's handler reseeded each child: two tasks do not draw the same numbers.
    assert value1 != value2
    # Before-handlers in reverse order, after-handlers in order, as CPython runs them.
    assert rest1.rsplit(" ", 1)[0] == "['before2', 'before1', 'child1', 'child2']"
    assert parent1 == parent2 == "parent ['before2', 'before1', 'parent1', 'parent2']"
    assert rest1.rsplit(" ", 1)[1] != rest2.rsplit(" ", 1)[1]  # two processes


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (("--late",), None),  # random was imported before recording began: its handler missed
        (("--thread",), None),  # another thread: CPython's after-fork pass is needed
        ((), {PLAIN_FORK_ENV: "1"}),  # asked for
    ],
    ids=["handlers-missed", "second-thread", "asked"],
)
def test_os_fork_is_used_where_libc_fork_would_not_be_safe(
    flags: tuple[str, ...], env: dict[str, str] | None
) -> None:
    mode, child1, _, child2, _ = fork_twice(*flags, env=env)
    assert mode == "os"
    assert child1.split(" ", 1)[0] != child2.split(" ", 1)[0]  # os.fork reseeds random too


@pytest.fixture
def dice_jobs(tmp_path: Path) -> Path:
    """A jobs directory whose job draws a random number and registers a fork handler."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "dice.py").write_text(
        textwrap.dedent(
            """
            import os
            import random

            from perseid_jobs import job

            FORKED_INTO = []
            os.register_at_fork(after_in_child=lambda: FORKED_INTO.append(os.getpid()))


            @job(max_duration="30s", slots=1)
            def run(task):
                print(random.random(), FORKED_INTO == [os.getpid()])
            """
        )
    )
    return jobs


@pytest.mark.parametrize("spare", [True, False], ids=["spare", "fork-per-start"])
def test_tasks_forked_by_the_zygote_get_their_own_random_state_and_fork_handlers(
    dice_jobs: Path, tmp_path: Path, spare: bool
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    zygote = ZygoteClient(dice_jobs, spare_dir=logs / ".spare" if spare else None)
    try:
        assert zygote.ready.fork == "libc"
        printed = []
        for task_id in ("01DICE1", "01DICE2", "01DICE3"):
            zygote.start(request(task_id, logs, job="dice"))
            events = events_until_exit(zygote, task_id)
            [exited] = [e for e in events if isinstance(e, Exited) and e.id == task_id]
            assert os.waitstatus_to_exitcode(exited.status) == 0, exited.reason
            [line] = [
                str(entry["msg"])
                for entry in log_lines(logs / f"{task_id}.log")
                if entry.get("stream") == "stdout"
            ]
            printed.append(line.split())
    finally:
        zygote.close()
    assert [handler_ran for _, handler_ran in printed] == ["True"] * 3
    assert len({value for value, _ in printed}) == 3
    assert orjson.loads(printed[0][0]) != orjson.loads(printed[1][0])
