"""``perseid-jobs demo``: two workers, the example jobs, and a live view, on an embedded default.

Redis is, in this order: ``PERSEID_REDIS_URL`` if set; else a private
``redis-server`` from PATH on a free port; else an embedded fakeredis server
in this process. Logs go to ``./var/bucket``. Everything it starts stops when
it ends (Ctrl-C, SIGTERM or ``--duration``), and it leaves the Redis as it found
it: it works in a namespace of its own, whose keys it deletes at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from rich.live import Live

from ..api.client import Client
from ..store.redisproc import RedisServer, free_port
from ..worker.settings import WorkerSettings, worker_argv
from . import render
from .demo_view import DemoState, live_view, plain_lines, series_lines

NAMESPACE_PREFIX = "perseid-demo-"


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


# One partition, whatever the Redis: the view counts the namespace's sets directly.
DEMO_PARTITIONS = 1


def start_workers(url: str, namespace: str, jobs: Path) -> list[subprocess.Popen[bytes]]:
    """Two workers of different sizes, logging to var/demo/.

    Each in a session of its own: a Ctrl-C in the terminal reaches only the demo, which
    then stops them with one SIGTERM (a second signal would be a cold shutdown).
    """
    procs = []
    Path("var/demo").mkdir(parents=True, exist_ok=True)
    for name, slots in (("big", 1024), ("small", 256)):
        settings = WorkerSettings(
            slots=slots,
            jobs_dir=jobs,
            redis_url=url,
            namespace=namespace,
            partitions=DEMO_PARTITIONS,
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
            procs.append(
                subprocess.Popen(
                    worker_argv(settings), stdout=log, stderr=log, start_new_session=True
                )
            )
    return procs


def schedule_examples(client: Client) -> list[str]:
    """Schedule one of each kind of task; return what was scheduled, as lines.

    A series is named by its series id (the one ``series`` lists), not by its first run.
    """
    lines = []

    def add(what: str, job: str, args: dict[str, object] | None = None, **kw: object) -> str:
        task = client.schedule(job, args, **kw)  # type: ignore[arg-type]
        shown = f"series {task.series}" if task.series else task.id
        lines.append(f"{what:<30} {job:<11} {shown}")
        return task.id

    add("one-off", "hello", {"name": "Ada"})
    add("every 2 s", "hello", {"name": "every 2s"}, every="2s", key="demo-every-2s")
    add("cron, every minute", "hello", {"name": "cron"}, cron="* * * * *", key="demo-cron")
    first = add("chain: first", "sleep", {"seconds": 2})
    add("chain: after it", "hello", {"name": "chained"}, after=first)
    add("heavy (512 slots: big only)", "heavy", {"seconds": 3})
    add("fails", "fail", {"message": "a demo failure"})
    add("times out (max 2 s)", "timeout")
    add("cancels itself (exit 100)", "cancel_self")
    return lines


def remove_namespace(client: Client) -> int:
    """Delete every key of the client's namespace; return how many there were."""
    removed = 0
    batch: list[str] = []
    for key in client.redis.scan_iter(match=f"{client.keys.prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += client.redis.delete(*batch)
            batch = []
    if batch:
        removed += client.redis.delete(*batch)
    return removed


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a drain of a few seconds), then SIGKILL what is left."""
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(15)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


class Stop:
    """Set by SIGINT/SIGTERM. A flag, not a KeyboardInterrupt: an exception raised by a
    signal handler can land in a ``__del__`` or a library's cleanup and be swallowed there,
    and then Ctrl-C would do nothing."""

    requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def running(self, end: float | None) -> bool:
        return not self.requested and (end is None or time.monotonic() < end)


def watch(client: Client, header: str, end: float | None, stop: Stop) -> None:
    """Show the namespace until ``end`` (monotonic) or Ctrl-C: live on a terminal, else
    a line of counts every 2 s and a line for each task that did not complete."""
    state = DemoState(client)
    started = time.monotonic()
    if not render.console.is_terminal:
        next_line = started
        while stop.running(end):
            bad = state.poll()
            if bad or time.monotonic() >= next_line:
                for line in plain_lines(state, bad, time.monotonic() - started):
                    render.console.print(line, markup=False, highlight=False)
                next_line = time.monotonic() + 2
            time.sleep(0.25)
        state.poll()
        render.console.print(plain_lines(state, [], time.monotonic() - started)[0], markup=False)
        for line in series_lines(client):
            render.console.print(line, markup=False, highlight=False)
        return
    state.poll()
    with Live(live_view(state, header), console=render.console, auto_refresh=False) as live:
        while stop.running(end):
            time.sleep(0.5)
            state.poll()
            live.update(live_view(state, header), refresh=True)


def run_demo(jobs: Path, duration: float | None, backend: str = "auto") -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``duration`` seconds; return the exit code."""
    stop = Stop()  # Ctrl-C and SIGTERM alike
    previous = signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    namespace = NAMESPACE_PREFIX + uuid.uuid4().hex[:8]
    try:
        with demo_redis(backend) as (url, which):
            render.console.print(f"Redis: {which}, namespace {namespace}", markup=False)
            client = Client.from_url(
                url, namespace=namespace, jobs_dir=jobs, partitions=DEMO_PARTITIONS
            )
            workers: list[subprocess.Popen[bytes]] = []
            try:
                workers = start_workers(url, namespace, jobs)
                deadline = time.monotonic() + 30
                while len(client.workers()) < 2 and stop.running(deadline):
                    time.sleep(0.1)
                if stop.requested:
                    raise KeyboardInterrupt
                scheduled = schedule_examples(client)
                render.console.print("Scheduled:\n  " + "\n  ".join(scheduled), markup=False)
                header = (
                    f"Redis: {which}  ·  logs: ./var/bucket  ·  "
                    f"{'Ctrl-C to stop' if duration is None else f'{duration:g}s'}"
                )
                watch(
                    client, header, None if duration is None else time.monotonic() + duration, stop
                )
            except KeyboardInterrupt:
                pass
            finally:
                # Not interrupted again halfway: a half-removed namespace is what this avoids.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                stop_workers(workers)
                removed = remove_namespace(client)
                client.close()
            render.console.print(
                f"\nStopped the workers and removed namespace {namespace} ({removed} keys)."
                " Task logs are in ./var/bucket.",
                markup=False,
            )
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    return 0
