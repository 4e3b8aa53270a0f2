"""The systems under test: perseid-jobs and its peers, each with its own worker CLI.

Every system is driven the same way: enqueue jobs (for a peer, by its own
client library in its own virtual environment), start its worker at
concurrency 2 with default settings, read the jobs' marker lines, stop it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.peers.bench_record import EnqueueSpec
from bench.processes import Service
from perseid_jobs import __version__
from perseid_jobs.api.client import Client
from perseid_jobs.core.errors import JobDefinitionError
from perseid_jobs.core.jobfile import load_job_file
from perseid_jobs.store.keys import Keys
from perseid_jobs.store.scripts import SCRIPT_NAMES, script_source

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NAMESPACE = "bench"
JOB = "bench_work"


@dataclass(frozen=True)
class Stage:
    """Where one scenario runs: the Redis server and a scratch directory."""

    redis_url: str
    work: Path

    def client(self) -> redis.Redis:
        """A plain client of the benchmark's Redis."""
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


class System:
    """One job system: how to enqueue, how to start its worker; see the subclasses."""

    name = ""
    runs = ""
    isolates = ""
    classic = True
    """Runs the no-op, 50 ms, latency and idle scenarios."""
    writes = False
    """Runs the connection scenarios (jobs that write one record to Redis)."""

    def available(self) -> bool:
        """True when its environment is installed."""
        raise NotImplementedError

    def unavailable(self) -> str:
        """Why it cannot run here (shown when it is skipped)."""
        return "not installed (run `make bench`)"

    def enqueue(self, stage: Stage, spec: EnqueueSpec) -> None:
        """Enqueue the jobs ``spec`` describes."""
        raise NotImplementedError

    def worker_argv(self, stage: Stage) -> list[str]:
        """The worker command line, at concurrency 2."""
        raise NotImplementedError

    def start_worker(self, stage: Stage) -> Service:
        """Start the worker (its own session) with its output in the scratch directory."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": stage.redis_url}
        log = stage.work / f"{self.name}-worker.log"
        return Service(self.worker_argv(stage), env=env, cwd=ROOT, log=log)

    def completed_at(self, stage: Stage, n: int) -> float | None:
        """When the system recorded the last of ``n`` completions (epoch s), if it records them."""
        return None

    def claimed_at(self, stage: Stage) -> dict[int, int]:
        """Due time -> when the system handed the job to a worker (epoch ms), if it records it."""
        return {}

    def script_names(self) -> dict[str, str]:
        """Names of the system's Lua scripts by SHA1, to label ``EVALSHA`` calls."""
        return {}

    def version(self) -> str:
        """The installed version."""
        raise NotImplementedError


class Perseid(System):
    """perseid-jobs: a fork per task from a warm parent."""

    name = "perseid-jobs"
    runs = "a fork per task from a warm parent (zygote)"
    isolates = "yes: own process and process group, hard kill"
    writes = True
    jobs_dir = BENCH / "jobs"

    def available(self) -> bool:
        """Always: it is the package under test."""
        return True

    def enqueue(self, stage: Stage, spec: EnqueueSpec) -> None:
        """Schedule through the public client, one task per call."""
        client = Client.from_url(stage.redis_url, namespace=NAMESPACE, jobs_dir=self.jobs_dir)
        try:
            for due in spec.dues():
                args: dict[str, object] = {"out": spec.out, "due": due, "sleep": spec.sleep}
                if spec.write:
                    args["write"] = spec.write
                # Half a millisecond past the due millisecond: the client keeps whole
                # milliseconds, so the task is due exactly at ``due`` whatever the float
                # rounding of the conversion.
                at = datetime.fromtimestamp(due + 0.0005, UTC) if due else None
                client.schedule(JOB, args, at=at)
        finally:
            client.close()

    def claimed_at(self, stage: Stage) -> dict[int, int]:
        """Due time -> the Redis time its task was claimed (both epoch ms), for started tasks."""
        keys = Keys(NAMESPACE)
        client = stage.client()
        ids = client.zrange(keys.finished, 0, -1) + client.zrange(keys.running, 0, -1)
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(keys.task(str(task_id)), "start_at", "started_at")
        found = {int(due): int(started) for due, started in pipe.execute() if due and started}
        client.close()
        return found

    def worker_argv(self, stage: Stage) -> list[str]:
        """``perseid-jobs worker --slots 2``, its logs and bucket in the scratch directory."""
        return [
            str(Path(sys.executable).parent / "perseid-jobs"),
            "worker",
            "--slots",
            "2",
            "--jobs",
            str(self.jobs_dir),
            "--redis",
            stage.redis_url,
            "--namespace",
            NAMESPACE,
            "--logs-dir",
            str(stage.work / "logs"),
            "--bucket",
            (stage.work / "bucket").as_uri(),
        ]

    def completed_at(self, stage: Stage, n: int) -> float | None:
        """The end time Redis recorded for the last completed task."""
        keys = Keys(NAMESPACE)
        client = stage.client()
        deadline = time.monotonic() + 10
        while client.zcard(keys.finished) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        last = client.zrange(keys.finished, -1, -1, withscores=True)
        client.close()
        return float(last[0][1]) / 1000 if last else None

    def version(self) -> str:
        """The package under test's version."""
        return __version__

    def script_names(self) -> dict[str, str]:
        """SHA1 of each script as loaded -> its name."""
        return {
            hashlib.sha1(script_source(name).encode()).hexdigest(): name for name in SCRIPT_NAMES
        }


class PerseidReused(Perseid):
    """perseid-jobs in reused mode (``bench/jobs_reused``): every throughput scenario."""

    name = "perseid-jobs reused"
    runs = "up to 100 tasks per process forked from the zygote (`max_tasks_per_process=100`)"
    isolates = "no: up to 100 tasks share a process (its own group, hard kill)"
    jobs_dir = BENCH / "jobs_reused"

    def available(self) -> bool:
        """True once ``@job`` accepts ``max_tasks_per_process`` (the job file then loads)."""
        return not self.unavailable()

    def unavailable(self) -> str:
        """'' if the reused job file loads, else why not (the decorator rejects the argument)."""
        try:
            load_job_file(self.jobs_dir / f"{JOB}.py")
        except JobDefinitionError as exc:
            detail = str(exc).split(": ", 1)[-1].removeprefix("import failed: ")
            return f"not available ({JOB}.py of {self.jobs_dir.name}/ does not load: {detail})"
        return ""


@dataclass(frozen=True)
class PeerSpec:
    """What differs between peers."""

    name: str
    package: str
    venv: str
    module: str
    runs: str
    isolates: str
    worker: tuple[str, ...]
    writes: bool = False  # runs the connection scenarios


class Peer(System):
    """A peer system in its own virtual environment under ``bench/``."""

    def __init__(self, spec: PeerSpec) -> None:
        self.spec = spec
        self.name, self.runs, self.isolates = spec.name, spec.runs, spec.isolates
        self.writes = spec.writes
        self.bin = BENCH / spec.venv / "bin"

    def available(self) -> bool:
        """True once ``make bench`` installed its environment."""
        return (self.bin / "python").exists()

    def enqueue(self, stage: Stage, spec: EnqueueSpec) -> None:
        """Run the peer's enqueuer (its own client library) with the spec on stdin."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": stage.redis_url}
        done = subprocess.run(
            [str(self.bin / "python"), "-m", f"bench.peers.{self.spec.module}"],
            input=spec.to_json(),
            text=True,
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} enqueue failed:\n{done.stderr[-2000:]}")

    def version(self) -> str:
        """The peer's version as installed in its environment."""
        code = f"import importlib.metadata as m; print(m.version({self.spec.package!r}))"
        done = subprocess.run(
            [str(self.bin / "python"), "-c", code], capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip()

    def worker_argv(self, stage: Stage) -> list[str]:
        """The peer's own worker CLI; ``{url}`` is the Redis URL."""
        head, *rest = self.spec.worker
        return [str(self.bin / head), *(a.format(url=stage.redis_url) for a in rest)]


PEERS = (
    PeerSpec(
        "RQ",
        "rq",
        ".venv-rq",
        "rq_app",
        "a fork per job (work horse)",
        "yes: a process per job, hard kill",
        ("rq", "worker-pool", "-n", "2", "-u", "{url}"),
        writes=True,
    ),
    PeerSpec(
        "Celery prefork",
        "celery",
        ".venv-celery",
        "celery_app",
        "2 long-lived pool processes",
        "no: jobs share the pool processes",
        ("celery", "-A", "bench.peers.celery_app", "worker", "-c", "2", "--loglevel", "WARNING"),
        writes=True,
    ),
    PeerSpec(
        "arq",
        "arq",
        ".venv-arq",
        "arq_app",
        "coroutines in one process",
        "no: jobs share one process",
        ("arq", "bench.peers.arq_app.WorkerSettings"),
    ),
    PeerSpec(
        "Dramatiq",
        "dramatiq",
        ".venv-dramatiq",
        "dramatiq_app",
        "threads in 2 long-lived processes",
        "no: jobs share the worker processes",
        ("dramatiq", "bench.peers.dramatiq_app", "--processes", "2", "--threads", "1"),
    ),
)


def all_systems() -> list[System]:
    """perseid-jobs (fresh, then reused mode) first, then every peer."""
    return [Perseid(), PerseidReused(), *(Peer(spec) for spec in PEERS)]
