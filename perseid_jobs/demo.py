"""``perseid-jobs demo``: two workers, the example jobs, and a live view, on an embedded default.

Redis is, in this order: ``PERSEID_REDIS_URL`` if set; else a private
``redis-server`` from PATH on a free port; else an embedded fakeredis server
in this process. Logs go to ``./var/bucket``. Everything it starts stops when
it ends (Ctrl-C or ``--duration``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from . import render
from .client import Client
from .redisproc import RedisServer, free_port
from .settings import WorkerSettings, worker_argv

NAMESPACE = "perseid-demo"


@contextmanager
def demo_redis(backend: str = "auto") -> Iterator[tuple[str, str]]:
    """Yield (URL, description) of the Redis the demo uses; stop it afterwards.

    ``backend``: ``auto`` (the order above), ``server`` or ``fake`` to force one.
    """
    url = os.environ.get("PERSEID_REDIS_URL")
    if url and backend == "auto":
        yield url, f"PERSEID_REDIS_URL ({url})"
        return
    if backend != "fake" and shutil.which("redis-server"):
        server = RedisServer(directory=Path("var/demo/redis").resolve())
        server.dir.mkdir(parents=True, exist_ok=True)
        server.start()
        try:
            yield server.url, f"a private redis-server on port {server.port}"
        finally:
            server.stop()
        return
    from fakeredis import TcpFakeServer

    port = free_port()
    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{port}/0", f"an embedded fakeredis server on port {port}"
    finally:
        fake.shutdown()
        fake.server_close()


def start_workers(url: str, jobs: Path) -> list[subprocess.Popen[bytes]]:
    """Two workers of different sizes, logging to var/demo/."""
    procs = []
    Path("var/demo").mkdir(parents=True, exist_ok=True)
    for name, slots in (("big", 1024), ("small", 256)):
        # The child keeps its own copy of the descriptor; ours closes at the end of the block.
        settings = WorkerSettings(
            slots=slots,
            jobs_dir=jobs,
            redis_url=url,
            namespace=NAMESPACE,
            instance_id=f"demo-{name}",
            logs_dir=Path(f"var/logs/demo-{name}"),
            bucket_url="file://var/bucket",
            heartbeat_s=1,
            lease_ttl_s=3,
            reap_interval_s=1,
            drain_timeout_s=3,
            kill_grace_s=1,
        )
        # The child keeps its own copy of the descriptor; ours closes at the end of the block.
        with Path(f"var/demo/worker-{name}.log").open("wb") as log:
            procs.append(subprocess.Popen(worker_argv(settings), stdout=log, stderr=log))
    return procs


def schedule_examples(client: Client) -> list[str]:
    """Schedule one of each kind of task; return what was scheduled, as lines."""
    lines = []

    def add(what: str, job: str, args: dict[str, object] | None = None, **kw: object) -> str:
        task = client.schedule(job, args, **kw)  # type: ignore[arg-type]
        lines.append(f"{what:<34} {job:<12} {task.id}")
        return task.id

    add("one-off", "hello", {"name": "Ada"})
    add("series every 2 s", "hello", {"name": "every 2s"}, every="2s", key="demo-every-2s")
    add("cron series, every minute", "hello", {"name": "cron"}, cron="* * * * *", key="demo-cron")
    first = add("chain: first", "sleep", {"seconds": 2})
    add("chain: after it", "hello", {"name": "chained"}, after=first)
    add("heavy (512 slots: big worker only)", "heavy", {"seconds": 3})
    add("fails", "fail", {"message": "a demo failure"})
    add("times out (max 2 s)", "timeout")
    add("cancels itself (exit 100)", "cancel_self")
    return lines


def view(client: Client, header: str) -> Group:
    """The live view: tasks by state, recent tasks, series, workers."""
    tasks = client.tasks(limit=200)
    counts = Counter(t.status.value for t in tasks)
    summary = Table.grid(padding=(0, 3))
    summary.add_row(
        *(
            f"{s}: {counts.get(s, 0)}"
            for s in ("pending", "running", "completed", "failed", "cancelled")
        )
    )
    return Group(
        Panel(header, title="perseid-jobs demo"),
        summary,
        render.task_table(tasks[:12]),
        render.series_table(client.series()),
        render.worker_table(client.workers()),
    )


def run_demo(jobs: Path, duration: float | None, backend: str = "auto") -> int:
    """Run the demo until Ctrl-C or ``duration`` seconds; return the exit code."""
    with demo_redis(backend) as (url, which):
        render.console.print(f"Redis: {which}")
        workers = start_workers(url, jobs)
        client = Client.from_url(url, namespace=NAMESPACE, jobs_dir=jobs)
        try:
            deadline = time.monotonic() + 30
            while len(client.workers()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            scheduled = schedule_examples(client)
            render.console.print("Scheduled:\n  " + "\n  ".join(scheduled))
            header = (
                f"Redis: {which}  ·  logs: ./var/bucket  ·  "
                f"{'Ctrl-C to stop' if duration is None else f'{duration:g}s'}"
            )
            end = None if duration is None else time.monotonic() + duration
            with Live(
                view(client, header),
                console=render.console,
                refresh_per_second=2,
                auto_refresh=False,
            ) as live:
                while end is None or time.monotonic() < end:
                    time.sleep(0.5)
                    live.update(view(client, header), refresh=True)
        except KeyboardInterrupt:
            pass
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(15)
                except subprocess.TimeoutExpired:
                    w.kill()
            client.close()
        render.console.print("\nStopped the workers. Task logs are in ./var/bucket.")
    return 0
