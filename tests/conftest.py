"""Test fixtures: a private redis-server per session, a fresh namespace per test, workers."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.worker.settings import WorkerSettings, worker_argv

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOBS = ROOT / "jobs"  # what a user sees: the README and the demo use only these
TEST_ONLY_JOBS = ROOT / "tests" / "jobs"  # chaos_* and other jobs that exist for the tests


def _merged_jobs_dir() -> Path:
    """One directory with the example jobs and the test-only ones, for workers and clients.

    A worker serves one ``--jobs`` directory and many tests mix ``hello`` with
    ``chaos_record``; links keep one copy of each file, in a directory of this
    test process (so two pytest runs never share it), removed when it exits.
    """
    merged = Path(tempfile.mkdtemp(prefix="perseid-test-jobs-"))
    atexit.register(shutil.rmtree, merged, ignore_errors=True)
    for source in (EXAMPLE_JOBS, TEST_ONLY_JOBS):
        for path in sorted(source.glob("*.py")):
            (merged / path.name).symlink_to(path)
    return merged


JOBS = _merged_jobs_dir()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test session on a free port (never the shared 6379)."""
    server = RedisServer(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(redis_server: RedisServer, namespace: str) -> Iterator[Client]:
    """A client on the session's Redis and the test's namespace."""
    c = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS)
    yield c
    c.close()


class WorkerProc:
    """A `perseid-jobs worker` subprocess."""

    def __init__(
        self,
        url: str,
        namespace: str,
        tmp: Path,
        slots: int,
        *extra: str,
        jobs: Path = JOBS,
        env: dict[str, str] | None = None,
    ) -> None:
        self.logs_dir = tmp / f"logs-{uuid.uuid4().hex[:6]}"
        self.bucket = tmp / "bucket"
        settings = WorkerSettings(
            slots=slots,
            jobs_dir=jobs,
            redis_url=url,
            namespace=namespace,
            heartbeat_s=0.2,
            lease_ttl_s=1,
            reap_interval_s=0.3,
            kill_grace_s=0.5,
            drain_timeout_s=5,
            logs_dir=self.logs_dir,
            bucket_url=f"file://{self.bucket}",
        )
        self.args = [*worker_argv(settings), *extra]
        self.stderr_path = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )

    def output(self) -> str:
        """What the worker wrote on stderr so far."""
        return self.stderr_path.read_text()

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL the worker process."""
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def start_worker(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProc]]:
    """Start workers; each is stopped at the end of the test."""
    started: list[WorkerProc] = []

    def start(slots: int = 4, *extra: str, **kw: object) -> WorkerProc:
        w = WorkerProc(redis_server.url, namespace, tmp_path, slots, *extra, **kw)  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        w._stderr.close()


def namespace_keys(client: Client) -> list[str]:
    """The keys of a client's namespace, every partition's (a whole-server scan would see
    other tests' keys come and go: retention, request ids' TTLs)."""
    return sorted(client.redis.scan_iter(match="{" + client.namespace + "*"))


def wait_until(
    cond: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> object:
    """Poll ``cond`` until truthy (for states that have no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def wait_workers(client: Client, n: int, timeout: float = 15.0) -> None:
    """Wait until ``n`` instances are registered."""
    wait_until(lambda: len(client.workers()) >= n, timeout, f"{n} workers")


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the session's Redis."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield r
    r.close()
