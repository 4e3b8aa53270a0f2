"""The dashboard's read cost: the overview and the first tasks page of a 100,000-task namespace.

    python -m bench.dashboard [--tasks 100000] [--reps 7] [--out bench/results]

Target (issue 19): each renders in < 300 ms server-side, the time the dashboard's
``Server-Timing`` header reports (reads from Redis and the template, not the network).
The namespace is written straight into a private redis-server in the layout the
scripts write (store/keys.py): 70 % ended, 30 % pending, plus a full events stream,
since scheduling 100,000 tasks through the scripts would take the benchmark's time
and measure nothing the dashboard does. Writes ``<out>/DASHBOARD.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson
import redis

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer

OUT = Path(__file__).resolve().parent / "results"
TARGET_MS = 300.0
PAGES = ("/", "/tasks")


def fill(r: redis.Redis, client: Client, n: int) -> None:
    """``n`` tasks in the namespace's layout: 70 % ended (1 in 10 failed), 30 % pending."""
    keys = client.partitions(record=True).keys[0]
    now = client.now_ms()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        task_id = f"01BENCH{i:019d}"
        at = now - (n - i) * 10
        args = orjson.dumps({"n": i, "customer": f"c{i % 997}"}).decode()
        h: dict[str, Any] = {"job": f"job{i % 20}", "slots": 1, "max_ms": 60_000,
                             "created_at": at, "start_at": at, "args": args}  # fmt: skip
        if i < n * 7 // 10:
            status = "failed" if i % 10 == 0 else "completed"
            h |= {"status": status, "started_at": at + 5, "ended_at": at + 9, "exit_code": 0}
            pipe.zadd(keys.finished, {task_id: at + 9})
        else:
            h["status"] = "pending"
            pipe.zadd(keys.due, {task_id: at + 3_600_000})
        pipe.hset(keys.task(task_id), mapping=h)
        if i >= n - 10_000:  # the events stream is capped at about 10,000 entries
            pipe.xadd(keys.events, {"event": h["status"], "id": task_id})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def measure(client: Client, url: str, reps: int) -> dict[str, list[float]]:
    """Each page's Server-Timing (ms) over ``reps`` requests, after one warm-up."""
    from starlette.testclient import TestClient

    from perseid_jobs.dashboard.app import create_app

    app = create_app(client, url, allowed_hosts={"127.0.0.1:8585"})
    out: dict[str, list[float]] = {p: [] for p in PAGES}
    with TestClient(app, base_url="http://127.0.0.1:8585") as tc:
        for path in PAGES:
            tc.get(path)
            for _ in range(reps):
                r = tc.get(path)
                assert r.status_code == 200, r.text[:300]
                out[path].append(float(r.headers["server-timing"].split("dur=")[1]))
    return out


def report(times: dict[str, list[float]], n: int) -> str:
    lines = [
        "# Dashboard reads",
        "",
        f"A namespace of {n:,} tasks (70 % ended, 30 % pending, a full events stream);",
        "server-side time per page (Server-Timing), median and max of the repetitions.",
        "",
        "| page | median ms | max ms | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path, values in times.items():
        med = statistics.median(values)
        met = "yes" if med < TARGET_MS else "no"
        lines.append(f"| `{path}` | {med:.1f} | {max(values):.1f} | < {TARGET_MS:g} ms | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(directory=Path(tmp)).start()
        try:
            client = Client.from_url(server.url, namespace="benchdash")
            fill(redis.Redis.from_url(server.url), client, args.tasks)
            times = measure(client, server.url, args.reps)
        finally:
            server.stop()
    text = report(times, args.tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "DASHBOARD.md").write_text(text)
    sys.stdout.write(text)
    met = all(statistics.median(v) < TARGET_MS for v in times.values())
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
