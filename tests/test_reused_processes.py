"""Reused task processes (``@job(max_tasks_per_process=N)``): real worker, Redis, processes.

The jobs are in tests/jobs/: ``reuse_echo`` (lines naming its task on every
channel), ``reuse_modes`` (ends its task as told), ``reuse_leak`` (40 MB more
per task, ``max_memory_per_process="150MB"``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.models import dt_to_ms
from perseid_jobs.logs.bucket import object_key

from .conftest import WorkerProc, wait_until, wait_workers


def log_lines(client: Client, w: WorkerProc, task_id: str) -> list[dict]:
    """The task's uploaded log, as parsed lines."""
    wait_until(lambda: client.get(task_id).log_url, 20, f"log_url of {task_id}")
    t = client.get(task_id)
    assert t.started_at is not None
    path = w.bucket / object_key(t.job, t.id, dt_to_ms(t.started_at))
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def pid_of(client: Client, w: WorkerProc, task_id: str) -> int:
    """The pid of the process that ran the task (its log's first line says)."""
    first = log_lines(client, w, task_id)[0]
    assert first["msg"] == "task started"
    return int(first["pid"])


def run_one(client: Client, job: str, args: dict) -> tuple[str, TaskStatus, str | None]:
    t = client.wait(client.schedule(job, args).id, 30)
    return t.id, t.status, t.reason


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it was read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_thousand_tasks_each_log_holds_only_its_own_lines(client: Client, start_worker) -> None:
    w = start_worker(4)
    wait_workers(client, 1)
    ids = [client.schedule("reuse_echo", {"lines": 2}).id for _ in range(1000)]
    for task_id in ids:
        t = client.wait(task_id, 60)
        assert t.status is TaskStatus.COMPLETED, (task_id, t.reason)
    pids: Counter[int] = Counter()
    for task_id in ids:
        lines = log_lines(client, w, task_id)
        assert all(x["task"] == task_id for x in lines)
        foreign = [x["msg"] for x in lines if "01" in x["msg"] and task_id not in x["msg"]]
        assert not foreign, (task_id, foreign)
        msgs = [x["msg"] for x in lines]
        for n in range(2):
            for kind in ("out", "err", "raw", "log"):
                assert f"{kind} {task_id} {n}" in msgs, (task_id, kind, n, msgs)
        assert f"tail {task_id}" in msgs
        pids[lines[0]["pid"]] += 1
    assert max(pids.values()) <= 50
    assert len(pids) <= 60, f"{len(pids)} processes for 1,000 tasks: not reused"


def test_a_timeout_mid_life_kills_the_process_and_the_next_task_gets_a_fresh_one(
    client: Client, start_worker
) -> None:
    w = start_worker(1)
    wait_workers(client, 1)
    before = [run_one(client, "reuse_modes", {"mode": "return"})[0] for _ in range(3)]
    reused = {pid_of(client, w, t) for t in before}
    assert len(reused) == 1
    hung, status, reason = run_one(client, "reuse_modes", {"mode": "hang"})
    assert (status, reason) == (TaskStatus.FAILED, "timeout after 2s")
    assert pid_of(client, w, hung) in reused
    assert not alive(next(iter(reused)))
    after = [run_one(client, "reuse_modes", {"mode": "return"}) for _ in range(2)]
    assert [s for _, s, _ in after] == [TaskStatus.COMPLETED] * 2
    fresh = {pid_of(client, w, t) for t, _, _ in after}
    assert len(fresh) == 1 and not fresh & reused


def test_a_process_past_max_memory_is_retired_between_tasks(client: Client, start_worker) -> None:
    w = start_worker(1)
    wait_workers(client, 1)
    ids = []
    for _ in range(8):
        task_id, status, _ = run_one(client, "reuse_leak", {})
        assert status is TaskStatus.COMPLETED
        ids.append(task_id)
    pids = [pid_of(client, w, t) for t in ids]
    per_process = Counter(pids)
    # 40 MB a task against 150 MB: no process may serve more than 4 (N is 50).
    assert len(per_process) >= 2 and max(per_process.values()) <= 4, per_process
    assert max(per_process.values()) >= 2, "never reused at all"
    retired = [
        t
        for t in ids
        if any("task process retired: RSS" in x["msg"] for x in log_lines(client, w, t))
    ]
    assert retired
    # The note is in the last task of each retired process, and the next task has another pid.
    for t in retired:
        i = ids.index(t)
        assert i + 1 == len(ids) or pids[i + 1] != pids[i]


def test_exit_codes_map_per_task_as_in_fresh_mode(client: Client, start_worker) -> None:
    w = start_worker(1)
    wait_workers(client, 1)
    cases = [  # mode, status, exit code, reason (as in fresh mode), whether the process lives on
        ("return", TaskStatus.COMPLETED, 0, None, True),
        ("raise", TaskStatus.FAILED, 1, "exit code 1: ValueError: boom", True),
        ("cancel", TaskStatus.CANCELLED, 100, "cancelled by the job (exit 100)", True),
        ("exit0", TaskStatus.COMPLETED, 0, None, False),
        ("exit100", TaskStatus.CANCELLED, 100, "cancelled by the job (exit 100)", False),
        ("exit3", TaskStatus.FAILED, 3, "exit code 3: sys.exit(3)", False),
        ("_exit3", TaskStatus.FAILED, 3, "exit code 3", False),
    ]
    for mode, status, code, reason, lives_on in cases:
        task_id, got_status, got_reason = run_one(client, "reuse_modes", {"mode": mode})
        assert (got_status, got_reason) == (status, reason), mode
        assert client.get(task_id).exit_code == code, mode
        next_id, next_status, _ = run_one(client, "reuse_modes", {"mode": "return"})
        assert next_status is TaskStatus.COMPLETED
        same = pid_of(client, w, task_id) == pid_of(client, w, next_id)
        assert same is lives_on, f"{mode}: the process {'ended' if lives_on else 'lived on'}"


def test_kill9_of_the_worker_leaves_no_reused_process(client: Client, start_worker) -> None:
    w = start_worker(3)
    wait_workers(client, 1)
    # One reused process of each job; then the reuse_modes one runs a task that hangs.
    done = [run_one(client, "reuse_modes", {"mode": "return"})[0]]
    done.append(run_one(client, "reuse_echo", {})[0])
    pids = {pid_of(client, w, t) for t in done}
    busy = client.schedule("reuse_modes", {"mode": "hang"}).id
    wait_until(lambda: client.get(busy).status is TaskStatus.RUNNING, 10, "busy task running")
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert pids <= set(_task_processes(w.proc.pid))
    w.kill9()
    wait_until(lambda: not any(alive(p) for p in pids), 10, "reused processes gone")


def _task_processes(worker_pid: int) -> list[int]:
    """Grandchildren of the worker (its zygote's children): the task processes."""

    def children(pid: int) -> list[int]:
        path = Path(f"/proc/{pid}/task/{pid}/children")
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    return [g for c in children(worker_pid) for g in children(c) if alive(g)]


def test_bad_reuse_options_are_refused_naming_the_fix() -> None:
    from perseid_jobs import job
    from perseid_jobs.core.errors import JobDefinitionError
    from perseid_jobs.core.jobfile import parse_memory

    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(JobDefinitionError, match=r"max_tasks_per_process=.*integer >= 1"):
            job(max_duration="1s", max_tasks_per_process=bad)  # type: ignore[arg-type]
    for bad_size in ("lots", "0MB", "-5MB", 0, "5 TB"):
        with pytest.raises(JobDefinitionError, match=r"max_memory_per_process=.*\"500MB\""):
            job(max_duration="1s", max_memory_per_process=bad_size)
    assert parse_memory("500MB") == 500 * 10**6
    assert parse_memory("1GiB") == 2**30
    assert parse_memory(4096) == 4096
    assert parse_memory(None) == 0
