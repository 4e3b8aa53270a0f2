"""The flow-control benchmark: what groups, a job's concurrency and a pause cost the claim.

    python -m bench.flow [--tasks 20000] [--groups 1000] [--backlog 20000]
                         [--paused 100000] [--workload 5000] [--reps 3] [--out bench/results]

Three targets (docs/flow.md, "Measured"), each measured in the same run on one private
redis-server, every repetition from an empty namespace, the variants of a target
alternated so drift in the machine is shared; ratios are medians over the repetitions
(min–max). The scripts are called directly (bench/flow_drive.py): Redis's time is read
from INFO commandstats, so a noisy client side does not blur it. Writes
``<out>/FLOW.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.flow_drive import (
    Bench,
    Profile,
    Serial,
    claim_calls,
    claims_until_laned,
    definition,
    finish_loop,
    serial_loop,
)
from bench.verdicts import Target
from perseid_jobs.store.redisproc import RedisServer

OUT = Path(__file__).resolve().parent / "results"
PLAIN, GROUPED, SERIAL, HELD = "plain", "grouped", "serial4", "held"
BATCH, DEPTH = 16, 4  # tasks per claim, and claimed batches running at once


@dataclass
class Runs:
    """Every repetition's figures by name, and the last repetition's profiles."""

    values: dict[str, list[float]] = field(default_factory=dict)
    profiles: dict[str, tuple[Profile, int]] = field(default_factory=dict)  # (delta, per)
    serial: list[Serial] = field(default_factory=list)
    server: str = ""  # redis-server's version

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def spread(self, name: str) -> tuple[float, float, float]:
        """Median, least and most of one figure."""
        v = self.values[name]
        return statistics.median(v), min(v), max(v)

    def text(self, name: str, fmt: str = ".2f", unit: str = "×") -> str:
        mid, low, high = self.spread(name)
        return f"{mid:{fmt}}{unit} ({low:{fmt}}–{high:{fmt}})"


def groups_rep(url: str, a: argparse.Namespace, rep: int, runs: Runs) -> None:
    """Target 1: the same tasks claimed and finished, plain, then in groups at a limit of 1."""
    variants = [(PLAIN, 0, 0), (GROUPED, a.groups, 1)]
    for job, groups, limit in variants if rep % 2 == 0 else variants[::-1]:
        b = Bench(url, {job: definition(group_concurrency=limit)})
        try:
            b.schedule(job, a.tasks, groups)
            d = finish_loop(b, a.tasks, BATCH, DEPTH)
        finally:
            b.close()
        runs.add(f"{job}_rate", d.tasks / d.seconds)
        runs.add(f"{job}_us", d.evalsha_usec / d.tasks)
        runs.profiles[job] = (d.profile, d.tasks)
    runs.add("groups_ratio", runs.values[f"{GROUPED}_rate"][-1] / runs.values[f"{PLAIN}_rate"][-1])
    runs.add("groups_cpu", runs.values[f"{GROUPED}_us"][-1] / runs.values[f"{PLAIN}_us"][-1])


def serial_rep(url: str, a: argparse.Namespace, runs: Runs) -> None:
    """Target 2: a job at concurrency=4 works off its backlog, one end at a time."""
    b = Bench(url, {SERIAL: definition(concurrency=4)})
    try:
        b.schedule(SERIAL, a.backlog)
        s = serial_loop(b, SERIAL)
    finally:
        b.close()
    runs.serial.append(s)
    runs.add("gap_p99", percentile(s.gaps_ms, 99))
    runs.add("ends_rate", s.ends / s.seconds)


def percentile(values: list[int], q: float) -> float:
    """The q-th percentile (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))])


def paused_setup(url: str, a: argparse.Namespace, variant: str, runs: Runs) -> Bench:
    """One variant of target 3 set up, its one-time cost counted: "alone" (no paused
    backlog), "first" (paused, then its backlog scheduled), "after" (the other way round),
    "empty" (the control: a job paused with no tasks, so the claim takes its flow path
    with no backlog at all)."""
    b = Bench(url, {PLAIN: definition(), HELD: definition()})
    if variant in ("first", "empty"):
        b.scripts.pause("job", HELD, pause=True)
    if variant in ("first", "after"):
        b.schedule(HELD, a.paused)
    if variant == "after":
        b.scripts.pause("job", HELD, pause=True)
    if variant in ("first", "after"):  # the one-time move into the lane (or the parking of it)
        calls, usec = claims_until_laned(b, HELD, a.paused, BATCH)
        runs.add(f"{variant}_once_ms", usec / 1000)
        runs.add(f"{variant}_once_calls", calls)
    return b


def paused_rep(a: argparse.Namespace, rep: int, runs: Runs) -> None:
    """Target 3: the claim alone, and beside a paused backlog paused first or after.

    Each variant has its own redis-server (so "alone" is alone), and the variants take
    turns, ``a.rounds`` rounds of the small workload each, so the machine's drift is
    shared; a variant's figure is its Redis time over all its claim calls.
    """
    order = ["alone", "first", "after", "empty"]
    order = order[rep % 4 :] + order[: rep % 4]
    servers = {v: RedisServer().start() for v in order}
    benches: dict[str, Bench] = {}
    try:
        benches = {v: paused_setup(servers[v].url, a, v, runs) for v in order}
        totals: dict[str, Profile] = {v: {} for v in order}
        for _ in range(a.rounds):
            for v in order:
                benches[v].schedule(PLAIN, a.workload)
                _, prof = claim_calls(benches[v], a.workload, BATCH)
                totals[v] = {c: add(totals[v].get(c), prof.get(c)) for c in totals[v].keys() | prof}
    finally:
        for b in benches.values():
            b.close()
        for server in servers.values():
            server.stop()
    per_call = {}
    for v, prof in totals.items():
        calls, usec = prof["evalsha"]
        per_call[v] = usec / calls
        runs.add(f"{v}_us", per_call[v])
        runs.profiles[f"paused_{v}"] = (prof, calls)
    for v in ("first", "after", "empty"):
        runs.add(f"{v}_ratio", per_call[v] / per_call["alone"])
    for v in ("first", "after"):  # the backlog's own cost, the flow path's set apart
        runs.add(f"{v}_vs_empty", per_call[v] / per_call["empty"])


def add(x: tuple[int, int] | None, y: tuple[int, int] | None) -> tuple[int, int]:
    """Two (calls, usec) counts together (None: none)."""
    x, y = x or (0, 0), y or (0, 0)
    return x[0] + y[0], x[1] + y[1]


def measure(a: argparse.Namespace) -> Runs:
    """Every repetition of every target on private redis-servers (one for targets 1 and
    2, three more for target 3)."""
    runs = Runs()
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        runs.server = str(client.info("server")["redis_version"])
        client.close()
        for rep in range(a.reps):
            groups_rep(server.url, a, rep, runs)
            serial_rep(server.url, a, runs)
            paused_rep(a, rep, runs)
    finally:
        server.stop()
    return runs


def serial_targets(a: argparse.Namespace, runs: Runs) -> list[Target]:
    """Target 2's rows: the gap between an end and the next start, and the running count."""
    gaps = [g for s in runs.serial for g in s.gaps_ms]
    points = [r for s in runs.serial for r in s.running]
    counted = [c for s in runs.serial for c in s.counted]
    extra = sum(s.extra_claims for s in runs.serial)
    p99 = runs.spread("gap_p99")[0]
    return [
        Target(f"concurrency=4, {a.backlog:,}-task backlog: end → next start, p99", "≤ 2 ms",
               f"{runs.text('gap_p99', '.0f', ' ms')}; max {max(gaps, default=0)} ms over"
               f" {len(gaps):,} starts; {extra} claims beyond the finishes' own;"
               f" {runs.text('ends_rate', ',.0f', ' ends/s')}", p99 <= 2),
        Target("concurrency=4: running while the backlog lasts", "exactly 4",
               f"{min(points, default=0)}–{max(points, default=0)} (running index) and"
               f" {min(counted, default=0)}–{max(counted, default=0)} (the limit's count)"
               f" at {len(points):,} ends",
               bool(points) and set(points) == {4} and set(counted) == {4})
    ]  # fmt: skip


def targets(a: argparse.Namespace, runs: Runs) -> list[Target]:
    """Every target's row."""
    ratio = runs.spread("groups_ratio")[0]
    rows = [
        Target(f"claim throughput, {a.groups:,} groups at group_concurrency=1 vs unlimited"
               f" ({a.tasks:,} tasks)", "≥ 0.80×",
               f"{runs.text('groups_ratio')}: {runs.text(f'{GROUPED}_rate', ',.0f', '')}"
               f" vs {runs.text(f'{PLAIN}_rate', ',.0f', '')} tasks/s; Redis"
               f" {runs.text(f'{GROUPED}_us', '.1f', '')} vs"
               f" {runs.text(f'{PLAIN}_us', '.1f', '')} µs/task"
               f" ({runs.text('groups_cpu')})", ratio >= 0.80),
        *serial_targets(a, runs),
    ]  # fmt: skip
    for v, how in (
        ("first", "paused before it was scheduled"),
        ("after", "scheduled, then paused"),
    ):
        r = runs.spread(f"{v}_ratio")[0]
        rows.append(
            Target(f"claim µs/call beside {a.paused:,} pending of a paused job ({how})",
                   "0.90–1.10× alone",
                   f"{runs.text(f'{v}_ratio')}: {runs.text(f'{v}_us', '.1f', '')} vs"
                   f" {runs.text('alone_us', '.1f', '')} µs", 0.9 <= r <= 1.1)
        )  # fmt: skip
        rows.append(
            Target(f"… the same vs a paused job with no tasks ({how})", "reported",
                   f"{runs.text(f'{v}_vs_empty')}", None)
        )  # fmt: skip
        rows.append(
            Target(f"one-time cost, {how}", "reported",
                   f"{runs.text(f'{v}_once_ms', '.1f', ' ms')} of Redis time in"
                   f" {runs.text(f'{v}_once_calls', '.0f', '')} claims ="
                   f" {runs.spread(f'{v}_once_ms')[0] * 1000 / a.paused:.2f} µs per task", None)
        )  # fmt: skip
    rows.append(
        Target("control: claim µs/call with a paused job that has no tasks", "reported",
               f"{runs.text('empty_ratio')}: {runs.text('empty_us', '.1f', '')} vs"
               f" {runs.text('alone_us', '.1f', '')} µs alone", None)
    )  # fmt: skip
    return rows


def profile_table(runs: Runs, names: list[str], per: str, top: int = 14) -> str:
    """Commands side by side (INFO commandstats of the last repetition): calls and µs per
    ``per`` (task or call), the heaviest first in the last of ``names``."""
    heads = " | ".join(f"{n} calls | {n} µs" for n in names)
    lines = [f"| command | {heads} |", "| --- |" + " --- | --- |" * len(names)]
    last, _ = runs.profiles[names[-1]]
    for cmd in sorted(last, key=lambda c: -last[c][1])[:top]:
        cells = []
        for n in names:
            prof, count = runs.profiles[n]
            calls, usec = prof.get(cmd, (0, 0))
            cells.append(f"{calls / count:.2f} | {usec / count:.2f}")
        lines.append(f"| {cmd} | {' | '.join(cells)} |")
    return f"Per {per}:\n\n" + "\n".join(lines) + "\n"


def machine() -> str:
    """A line on the machine the numbers come from."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = found[0] if found else model
    client_version = redis.__version__
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, redis-py"
        f" {client_version}; a shared, noisy machine: compare ratios within one run, not"
        " absolute rates across runs."
    )


def report(a: argparse.Namespace, runs: Runs, command: str) -> str:
    """FLOW.md: the targets' table, how it was measured, and the claims' profiles."""
    head = "| target | wanted | measured | verdict |\n| --- | --- | --- | --- |\n"
    body = "\n".join(t.row() for t in targets(a, runs))
    notes = (
        f"\n\n`{command}` ({a.reps} repetitions; median (min–max)). {machine()}"
        f" redis-server {runs.server}.\n\n"
        f"Target 1: claims of {BATCH} on an instance with more slots than tasks, up to"
        f" {DEPTH} claimed batches running; each finish ends the oldest batch and claims in"
        " the same call. tasks/s is wall time (round trips included); µs/task is"
        " Redis's time in the scripts (INFO commandstats, evalsha).\n"
        "Target 2: each finish ends the oldest of the running tasks and claims in the same"
        " call; the gap is the next task's started_at minus the ended task's ended_at, both"
        " from the task records (Redis's clock, ms).\n"
        f"Target 3: {a.rounds} rounds of {a.workload:,} due tasks of another job claimed"
        f" {BATCH} per call, alone and beside {a.paused:,} pending tasks of a paused job, each"
        " variant on its own redis-server, the variants taking turns; µs per claim call from"
        " INFO commandstats. The control pauses a job that has no tasks: any pause (or"
        " limit) in a namespace sends every claim down the flow path (due set and lanes"
        " merged), so set against it the backlog's own cost shows.\n"
    )
    profiles = (
        "\n### Profile: claim and finish, unlimited vs groups\n\n"
        + profile_table(runs, [PLAIN, GROUPED], "task")
        + "\n### Profile: claim beside a paused backlog\n\n"
        + profile_table(
            runs, ["paused_alone", "paused_empty", "paused_first", "paused_after"], "claim call"
        )
    )
    return head + body + notes + profiles


def main(argv: list[str] | None = None) -> str:
    """Run every target, print and write the report; returns it."""
    p = argparse.ArgumentParser(prog="python -m bench.flow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--tasks", type=int, default=20_000, help="target 1's tasks")
    p.add_argument("--groups", type=int, default=1000, help="target 1's groups")
    p.add_argument("--backlog", type=int, default=20_000, help="target 2's backlog")
    p.add_argument("--paused", type=int, default=100_000, help="target 3's paused tasks")
    p.add_argument("--workload", type=int, default=5000, help="target 3's unpaused tasks")
    p.add_argument("--rounds", type=int, default=5, help="target 3's workloads per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.flow", *given])
    text = report(args, measure(args), command)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "FLOW.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
