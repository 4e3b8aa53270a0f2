"""Malformed input, fed to the command line and to the client: one clear line, no damage.

Each command-line case runs ``python -m perseid_jobs …`` and expects a non-zero exit,
exactly one line on stderr that names the cause, no traceback, and not one key
written in Redis. Each client case expects the named exception with a one-line
message and no key written either. The worker cases end in a clean failed task
while the worker keeps serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.errors import (
    InvalidArgs,
    InvalidJobName,
    InvalidTime,
    RedisUnavailable,
    TaskNotFound,
    UnknownJob,
)
from perseid_jobs.store.keys import NamespaceError
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, ROOT, wait_until, wait_workers

LEAD_FIX = "needs a fix outside the worker (see the report of issue 5)"


class Case(msgspec.Struct):
    """One command line and what its single stderr line must contain."""

    name: str
    argv: list[str | bytes]
    cause: str
    uses: tuple[str, ...] = ("redis", "namespace", "jobs")  # common options it takes
    fix: str = ""  # non-empty: a known defect, the case is expected to fail


DEEP_LIST = "[" * 60_000 + "]" * 60_000  # stays under Linux's 128 KiB per argument
DEEP_OBJECT = '{"a":' * 20_000 + "1" + "}" * 20_000
NO_JOBS: tuple[str, ...] = ("redis", "namespace")
ONLY_REDIS: tuple[str, ...] = ("redis",)

CASES = [
    Case("unknown job", ["schedule", "nosuchjob"], "unknown job 'nosuchjob'"),
    Case("job name with a slash", ["schedule", "a/b"], "invalid job name 'a/b'"),
    Case("job name ..", ["schedule", ".."], "invalid job name '..'"),
    Case("job name climbing out", ["schedule", "../jobs/hello"], "invalid job name"),
    Case("args not an object", ["schedule", "hello", "--args", "[1, 2]"], "JSON object"),
    Case("args a bare string", ["schedule", "hello", "--args", '"x"'], "JSON object"),
    Case("args invalid JSON", ["schedule", "hello", "--args", "{"], "not valid JSON"),
    Case("args nested 60,000 deep", ["schedule", "hello", "--args", DEEP_LIST], "not valid JSON"),
    Case("args object nested deep", ["schedule", "hello", "--args", DEEP_OBJECT], "not valid JSON"),
    Case("args not UTF-8", ["schedule", "hello", "--args", b'{"a": "\xff"}'], "UTF-8"),
    Case("--at not a time", ["schedule", "hello", "--at", "tomorrowish"], "--at 'tomorrowish'"),
    Case("--at without offset", ["schedule", "hello", "--at", "2026-12-01T09:00"], "offset"),
    Case("--at bad delay", ["schedule", "hello", "--at", "+10x"], "invalid duration"),
    Case("--after unknown task", ["schedule", "hello", "--after", "01NOPE"], "no such task"),
    Case("--every under the 1s floor", ["schedule", "hello", "--every", "1ms"], "1s floor"),
    Case("--durable-timeout 0", ["schedule", "hello", "--durable", "--durable-timeout", "0"],
         "--durable-timeout 0"),
    Case("show unknown id", ["show", "01NOPE"], "no task or series with id '01NOPE'", uses=NO_JOBS),
    Case("cancel unknown id", ["cancel", "01NOPE"], "no task or series with id '01NOPE'",
         uses=NO_JOBS),
    Case("Redis that does not answer", ["show", "X", "--redis", "redis://127.0.0.1:1/0"],
         "cannot reach Redis at redis://127.0.0.1:1/0", uses=()),
    Case("password never shown", ["show", "X", "--redis", "redis://u:hunter2@127.0.0.1:1/0"],
         "redis://u:***@127.0.0.1:1/0", uses=()),
    Case("sentinel that does not answer",
         ["show", "X", "--redis", "redis+sentinel://127.0.0.1:1/main"],
         "redis+sentinel://127.0.0.1:1/main", uses=()),
    Case("cluster that does not answer", ["show", "X", "--redis", "redis+cluster://127.0.0.1:1"],
         "redis+cluster://127.0.0.1:1", uses=()),
    Case("not a Redis URL", ["show", "X", "--redis", "http://127.0.0.1:1/0"],
         "invalid Redis URL", uses=()),
    Case("namespace with braces", ["schedule", "hello", "--namespace", "a{b}"], "namespace",
         uses=("redis", "jobs")),
    Case("worker namespace with braces", ["worker", "--slots", "1", "--namespace", "x{y}"],
         "namespace", uses=("redis", "jobs")),
    Case("--slots 0", ["worker", "--slots", "0"], "at least 1 slot"),
    Case("--slots -1", ["worker", "--slots", "-1"], "at least 1 slot"),
    Case("jobs dir missing", ["worker", "--slots", "1", "--jobs", "/nonexistent/jobs"],
         "'/nonexistent/jobs' does not exist", uses=NO_JOBS),
    Case("job file with a syntax error", ["schedule", "broken", "--jobs", "{broken}"],
         "SyntaxError", uses=NO_JOBS),
    Case("bucket URL of no known kind", ["worker", "--slots", "1", "--bucket", "ftp://x/y"],
         "unsupported bucket URL 'ftp://x/y'"),
    Case("lease not longer than heartbeat",
         ["worker", "--slots", "1", "--heartbeat", "5s", "--lease-ttl", "5s"], "--lease-ttl"),
    Case("heartbeat not a duration", ["worker", "--slots", "1", "--heartbeat", "soon"],
         "--heartbeat"),
    Case("unknown --status", ["tasks", "--status", "bogus"], "bogus", uses=NO_JOBS),
]  # fmt: skip


def namespace_keys(r: redis.Redis, namespace: str) -> int:
    """How many keys the namespace has."""
    return len(list(r.scan_iter(match="{" + namespace + "}*", count=1000)))


def run_cli(argv: list[str | bytes]) -> subprocess.CompletedProcess[bytes]:
    """``python -m perseid_jobs …`` with the environment cleared of PERSEID_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEID_")}
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *argv],
        capture_output=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip


class Ran(msgspec.Struct):
    """What one case did: its process, and the keys of its namespace before and after."""

    result: subprocess.CompletedProcess[bytes]
    keys_before: int
    keys_after: int


@pytest.fixture(scope="module")
def ran(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Ran]]:
    """Every case, run concurrently (each in its own namespace): they are slow one by one."""
    broken = tmp_path_factory.mktemp("broken_jobs")
    (broken / "broken.py").write_text("def oops(:\n")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    dbsize = r.dbsize()

    def one(case: Case) -> Ran:
        namespace = f"bad{uuid.uuid4().hex[:10]}"
        common: dict[str, list[str | bytes]] = {
            "redis": ["--redis", redis_server.url],
            "namespace": ["--namespace", namespace],
            "jobs": ["--jobs", str(JOBS)],
        }
        argv = [a.replace("{broken}", str(broken)) if isinstance(a, str) else a
                for a in case.argv]  # fmt: skip
        # The common options first: a case's own --redis/--namespace/--jobs comes later.
        full = [argv[0], *(x for u in case.uses for x in common[u]), *argv[1:]]
        before = namespace_keys(r, namespace)
        result = run_cli(full)
        return Ran(result, before, namespace_keys(r, namespace))

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip([c.name for c in CASES], pool.map(one, CASES), strict=True))
    # Not one key anywhere, whichever namespace a case would have used.
    assert r.dbsize() == dbsize
    r.close()
    yield results


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=f"{LEAD_FIX}: {c.fix}",
                                                         strict=True)] if c.fix else [])
     for c in CASES],
)  # fmt: skip
def test_bad_command_line_gives_one_line_and_writes_nothing(
    case: Case, ran: dict[str, Ran]
) -> None:
    done = ran[case.name]
    stderr = done.result.stderr.decode("utf-8", "replace")
    assert done.result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert case.cause in stderr, stderr
    assert done.keys_after == done.keys_before == 0


def huge_args() -> dict[str, Any]:
    return {"blob": "x" * (1024 * 1024 + 1)}


def deep_args() -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(5000):
        value = {"a": value}
    return value


CLIENT_CASES: list[tuple[str, Callable[[Client], object], type[Exception], str]] = [
    ("unknown job", lambda c: c.schedule("nosuchjob"), UnknownJob, "unknown job"),
    ("job name with a slash", lambda c: c.schedule("a/b"), InvalidJobName, "invalid job name"),
    ("job name ..", lambda c: c.schedule(".."), InvalidJobName, "invalid job name"),
    ("args not an object", lambda c: c.schedule("hello", [1]), InvalidArgs, "JSON object"),  # type: ignore[arg-type]
    ("args over 1 MiB", lambda c: c.schedule("hello", huge_args()), InvalidArgs, "1 MiB"),
    ("args nested 5,000 deep", lambda c: c.schedule("hello", deep_args()), InvalidArgs, "JSON"),
    ("args not UTF-8", lambda c: c.schedule("hello", {"a": "\udcff"}), InvalidArgs, "JSON"),
    ("args not JSON", lambda c: c.schedule("hello", {"a": b"\xff"}), InvalidArgs, "JSON"),
    ("bad at", lambda c: c.schedule("hello", at="tomorrowish"), InvalidTime, "tomorrowish"),
    ("every and after", lambda c: c.schedule("hello", every="1m", after="01NOPE"), InvalidTime,
     "--after"),
    ("bad every", lambda c: c.schedule("hello", every="often"), InvalidTime, "often"),
    ("every under 1s", lambda c: c.schedule("hello", every="1ms"), InvalidTime, "1s floor"),
    ("durable timeout negative", lambda c: c.schedule("hello", durable=True, durable_timeout=-1),
     InvalidTime, "--durable-timeout -1"),
    ("get unknown id", lambda c: c.get("01NOPE"), TaskNotFound, "no task with id"),
    ("cancel unknown id", lambda c: c.cancel("01NOPE"), TaskNotFound, "no task with id"),
    ("Redis that does not answer", lambda c: Client.from_url("redis://127.0.0.1:1/0"),
     RedisUnavailable, "redis://127.0.0.1:1/0"),
    ("namespace with braces", lambda c: Client(c.redis, namespace="a{b}"), NamespaceError,
     "invalid namespace"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "cause"),
    [pytest.param(*case[1:], id=case[0]) for case in CLIENT_CASES],
)
def test_bad_client_call_raises_one_line_and_writes_nothing(
    client: Client, raw_redis: redis.Redis, namespace: str,
    call: Callable[[Client], object], error: type[Exception], cause: str,
) -> None:  # fmt: skip
    before = (namespace_keys(raw_redis, namespace), raw_redis.dbsize())
    with pytest.raises(error) as caught:
        call(client)
    assert "\n" not in str(caught.value) and cause in str(caught.value)
    assert (namespace_keys(raw_redis, namespace), raw_redis.dbsize()) == before


def test_worker_with_a_broken_job_file_serves_the_others(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "good.py").write_text(
        "from perseid_jobs import job\n@job(max_duration=5)\ndef run(task):\n    pass\n"
    )
    (jobs / "broken.py").write_text("def oops(:\n")
    (jobs / "no_job.py").write_text("x = 1\n")
    worker = start_worker(2, jobs=jobs)
    wait_workers(client, 1)
    assert [j.name for j in client.jobs()] == ["good"]
    assert client.wait(client.schedule("good").id, 15).status is TaskStatus.COMPLETED
    assert "broken.py" in worker.output() and "SyntaxError" in worker.output()
    assert "no_job.py" in worker.output() and worker.proc.poll() is None


def test_grandchild_ignoring_sigterm_is_killed_at_the_timeout_anyway(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker(2)
    pidfile = tmp_path / "grandchild.pid"
    task = client.schedule("chaos_grandchild", {"pidfile": str(pidfile)})
    done = client.wait(task.id, 20)
    assert done.status is TaskStatus.FAILED and done.reason == "timeout after 2s"
    grandchild = int(pidfile.read_text())

    def gone() -> bool:
        try:
            state = Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    wait_until(gone, 5, "the grandchild that ignored SIGTERM to die")
    assert client.wait(client.schedule("hello").id, 15).status is TaskStatus.COMPLETED
    assert worker.proc.poll() is None
