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

from bench.cluster_run import Run, measure
from bench.verdicts import Target

OUT = Path(__file__).resolve().parent / "results"


def _per_task(values: list[float], n: int) -> float:
    return sum(values) / n


def targets(single: Run, clusters: list[Run]) -> list[Target]:
    """Every target of the issue's "Measure" from the runs."""
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
        rows.append(
            Target(f"overhead, {m}", "<= 1.15x", f"{over:.2f}x [{cover:.2f}x]", over <= 1.15)
        )
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


def table(single: Run, clusters: list[Run]) -> str:
    """The markdown table of targets, with a line on how it was measured."""
    head = "| target | wanted | measured | verdict |\n| --- | --- | --- | --- |\n"
    body = "\n".join(t.row() for t in targets(single, clusters))
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
    args = p.parse_args(argv)
    single = measure(1, args.tasks)
    clusters = [measure(int(m), args.tasks) for m in args.primaries.split(",")]
    text = table(single, clusters)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "CLUSTER.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
