"""One run of the cluster benchmark on one topology: schedule N, run them, Redis's deltas.

Redis's side is read per primary from ``INFO cpu`` (user + sys of the server) and
``INFO commandstats`` (usec inside commands), before scheduling, after scheduling
(N pending, no worker) and once every task finished with the workers still up.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.cluster_servers import Topology
from perseid_jobs.api.client import Client
from perseid_jobs.store.partitions import Partitions
from perseid_jobs.worker.settings import WorkerSettings, worker_argv

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "cbench"
JOB = "noop"
WARM = 100  # far-future tasks scheduled first, so script loads and new keys are not counted
_OWN = ("cmdstat_info", "cmdstat_config", "cmdstat_slowlog")  # the bench's own calls


@dataclass(frozen=True)
class Sample:
    """One primary at one instant."""

    cpu_s: float
    cmd_usec: float
    memory: int


@dataclass(frozen=True)
class Run:
    """What one topology measured (lists: one value per primary)."""

    primaries: int
    partitions: int
    tasks: int
    cpu_s: list[float]
    cmd_usec: list[float]
    memory_per_task: float
    rate: float
    exactly_once: bool
    error: str = ""


def sample(node: redis.Redis) -> Sample:
    """CPU seconds, command microseconds and used memory of one server now."""
    cpu: dict[str, Any] = node.info("cpu")
    stats: dict[str, Any] = node.info("commandstats")
    usec = sum(float(v["usec"]) for k, v in stats.items() if k not in _OWN)
    mem = int(node.info("memory")["used_memory"])
    return Sample(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), usec, mem)


def _finished(client: Any, parts: Partitions) -> tuple[int, float]:
    """Ended tasks over all partitions, and the latest end (Redis ms)."""
    count, last = 0, 0.0
    for keys in parts:
        count += int(client.zcard(keys.finished))
        top = client.zrange(keys.finished, -1, -1, withscores=True)
        if top:
            last = max(last, float(top[0][1]))
    return count, last


def _exactly_once(client: Any, parts: Partitions, n: int) -> bool:
    """Every ended task completed, at its first attempt, and there are ``n`` of them."""
    seen = 0
    for keys in parts:
        for task_id in client.zrange(keys.finished, 0, -1):
            status, attempt = client.hmget(keys.task(str(task_id)), "status", "attempt")
            seen += 1
            if status != "completed" or attempt != "1":
                return False
    return seen == n


def _workers(url: str, work: Path, count: int, slots: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        s = WorkerSettings(
            slots=slots,
            jobs_dir=ROOT / "jobs",
            redis_url=url,
            namespace=NAMESPACE,
            logs_dir=work / f"logs{i}",
            bucket_url=(work / "bucket").as_uri(),
        )
        with (work / f"worker{i}.log").open("wb") as log:  # the child keeps its own copy
            procs.append(subprocess.Popen(worker_argv(s), stdout=log, stderr=subprocess.STDOUT))
    return procs


Hook = Callable[[list[redis.Redis]], None]


def measure(
    primaries: int,
    n: int,
    workers: int = 2,
    slots: int = 2,
    timeout: float = 600,
    hooks: tuple[Hook, Hook] | None = None,
) -> Run:
    """Start the topology (P = 1 alone, else 4 x primaries), schedule ``n``, run them all.

    ``hooks``: called with the primaries' clients as the window opens and as it closes
    (the profile turns a log on, then reads it).
    """
    topo = Topology(primaries).start()
    work = Path(tempfile.mkdtemp(prefix="perseid-cbench-work-"))
    p = 1 if primaries == 1 else 4 * primaries
    client = Client.from_url(topo.url, namespace=NAMESPACE, jobs_dir=ROOT / "jobs", partitions=p)
    nodes = topo.nodes()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(WARM):
            client.schedule(JOB, {"n": -i}, at="+1d")
        if hooks:
            hooks[0](nodes)
        before = [sample(c) for c in nodes]
        for i in range(n):
            client.schedule(JOB, {"n": i})
        pending = [sample(c) for c in nodes]
        memory = sum(b.memory - a.memory for a, b in zip(before, pending, strict=True)) / n
        parts = Partitions(NAMESPACE, p)
        start_ms = client.now_ms()
        procs = _workers(topo.url, work, workers, slots)
        deadline = time.monotonic() + timeout
        while (done := _finished(client.redis, parts))[0] < n:
            if time.monotonic() > deadline or any(w.poll() is not None for w in procs):
                return Run(primaries, p, n, [], [], memory, 0.0, False, f"{done[0]}/{n} ran")
            time.sleep(0.25)
        after = [sample(c) for c in nodes]
        if hooks:
            hooks[1](nodes)
        once = _exactly_once(client.redis, parts, n)
        return Run(
            primaries,
            p,
            n,
            [b.cpu_s - a.cpu_s for a, b in zip(before, after, strict=True)],
            [b.cmd_usec - a.cmd_usec for a, b in zip(before, after, strict=True)],
            memory,
            n / ((done[1] - start_ms) / 1000),
            once,
        )
    finally:
        for w in procs:
            w.terminate()
        for w in procs:
            w.wait(30)
        client.close()
        for c in nodes:
            c.close()
        topo.stop()
