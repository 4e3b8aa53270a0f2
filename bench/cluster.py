"""The cluster benchmark of issue #16: spread, overhead, capacity, end to end, memory.

    .venv/bin/python -m bench.cluster [--tasks 5000] [--out bench/results]

Runs one plain redis-server with P = 1, then local clusters of 3 and 6 primaries with
P = 4 x primaries (bench/cluster_run.py), and prints the targets' table, also written
to ``<out>/CLUSTER.md``. On 2 cores the workers, not Redis, are the bottleneck, so
Redis's side is read directly: ``INFO cpu`` per primary (``INFO commandstats`` usec
in brackets).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import redis

from bench.cluster_run import Run, measure
from bench.verdicts import Target
from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer

OUT = Path(__file__).resolve().parent / "results"
JOBS = Path(__file__).resolve().parent.parent / "jobs"


def machine_price(servers: int, calls: int = 3000) -> float:
    """Redis time per schedule call when the calls go round robin to ``servers`` separate
    plain redis-servers (P = 1 each, no Cluster), over one server's.

    The control for this machine: M servers on 2 shared cores each run a third of the
    time, and a call on one that just woke costs more (cold caches), partitions or not.
    """
    per_call = []
    for count in (1, servers):
        srvs = [RedisServer().start() for _ in range(count)]
        try:
            clients = [Client.from_url(s.url, namespace="price", jobs_dir=JOBS) for s in srvs]
            for c in clients:
                c.schedule("noop", {"n": -1}, at="+1h")  # loads the scripts
            direct = [redis.Redis.from_url(s.url) for s in srvs]
            for r in direct:
                r.config_resetstat()
            for i in range(calls):
                clients[i % count].schedule("noop", {"n": i}, at="+1h")
            stats = [r.info("commandstats")["cmdstat_evalsha"] for r in direct]
            per_call.append(sum(x["usec"] for x in stats) / sum(x["calls"] for x in stats))
        finally:
            for s in srvs:
                s.stop()
    return per_call[1] / per_call[0]


def _per_task(values: list[float], n: int) -> float:
    return sum(values) / n


def targets(single: Run, clusters: list[Run], prices: dict[int, float]) -> list[Target]:
    """Every target of the issue's "Measure" from the runs (``prices``: see machine_price)."""
    rows = []
    base_cpu = _per_task(single.cpu_s, single.tasks)
    base_cmd = _per_task(single.cmd_usec, single.tasks)
    cap1 = single.tasks / max(single.cpu_s)
    rows.append(Target("capacity, 1 (P=1)", "baseline", f"{cap1:,.0f} tasks/s", None))
    for run in clusters:
        m = run.primaries
        if run.error:
            rows.append(Target(f"{m} primaries", "runs", run.error, False))
            continue
        share = max(run.cpu_s) / sum(run.cpu_s) * m
        cshare = max(run.cmd_usec) / sum(run.cmd_usec) * m
        rows.append(
            Target(f"spread, {m} (P={run.partitions})", "<= 1.25/M",
                   f"{share:.2f}/M [{cshare:.2f}/M]", share <= 1.25)
        )  # fmt: skip
        over = _per_task(run.cpu_s, run.tasks) / base_cpu
        cover = _per_task(run.cmd_usec, run.tasks) / base_cmd
        price = prices.get(m, 1.0)
        rows.append(
            Target(f"overhead, {m}", "<= 1.15x",
                   f"{over:.2f}x [{cover:.2f}x]; {m} plain servers alone cost {price:.2f}x"
                   f" per call here, so partitions {cover / price:.2f}x", over <= 1.15)
        )  # fmt: skip
        cap = run.tasks / max(run.cpu_s)
        ccap = run.tasks / max(run.cmd_usec) * 1e6 / (single.tasks / max(single.cmd_usec) * 1e6)
        rows.append(
            Target(f"capacity, {m}", f">= {0.8 * m * cap1:,.0f} (0.8 x M x single)",
                   f"{cap:,.0f} tasks/s = {cap / cap1 / m:.2f} of M x single [{ccap / m:.2f}]",
                   cap >= 0.8 * m * cap1)
        )  # fmt: skip
        if m == 3:
            ratio = run.rate / single.rate
            rows.append(
                Target(f"end to end, {run.tasks:,} no-op, 2 workers, 3 primaries",
                       ">= 0.9x single, each exactly once",
                       f"{run.rate:,.0f}/s vs {single.rate:,.0f}/s = {ratio:.2f}x,"
                       f" exactly once: {run.exactly_once}",
                       ratio >= 0.9 and run.exactly_once and single.exactly_once)
            )  # fmt: skip
    worst = max(r.memory_per_task for r in [single, *clusters])
    each = ", ".join(f"{r.primaries}: {r.memory_per_task:.0f}" for r in [single, *clusters])
    rows.append(Target("memory per pending task", "<= 400 B", f"{each} B", worst <= 400))
    return rows


def table(single: Run, clusters: list[Run], prices: dict[int, float]) -> str:
    """The markdown table of targets, with a line on how it was measured."""
    head = "| target | wanted | measured | verdict |\n| --- | --- | --- | --- |\n"
    body = "\n".join(t.row() for t in targets(single, clusters, prices))
    note = (
        f"\n\n{single.tasks:,} tasks per topology; Redis CPU from INFO cpu,"
        " [INFO commandstats] in brackets.\n"
    )
    return head + body + note


def main(argv: list[str] | None = None) -> str:
    """Run the three topologies, print and write the table; returns it."""
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--primaries", default="3,6", help="cluster sizes, comma-separated")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--price-calls", type=int, default=3000, help="calls of the machine control")
    args = p.parse_args(argv)
    single = measure(1, args.tasks)
    clusters = [measure(int(m), args.tasks) for m in args.primaries.split(",")]
    prices = {r.primaries: machine_price(r.primaries, args.price_calls) for r in clusters}
    text = table(single, clusters, prices)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "CLUSTER.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
