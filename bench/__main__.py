"""``python -m bench``: run every scenario for perseid-jobs and its peers, write REPORT.md.

``make bench`` installs the peers first; ``--smoke`` runs perseid-jobs alone
with tiny numbers (the test suite does, so the benchmark cannot rot).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench import ceilings, claims, profile, scenarios
from bench.report import render
from bench.results import Results, SystemRuns
from bench.systems import BENCH, Stage, System, all_systems
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.worker.settings import WorkerSettings

T = TypeVar("T")

SMOKE = {
    "reps": 1,
    "noop": 20,
    "slow": 4,
    "write_noop": 20,
    "write_slow": 4,
    "latency": 5,
    "span": 0.5,
    "lead": 0.5,
    "idle": 1.0,
    "settle": 0.2,
    "fork": 100,
    "claims": 300,
    "pending": 2000,
    "pending_small": 200,
    "systems": "perseid-jobs,perseid-jobs reused",
    "profile": False,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every N has a default that keeps a full run near 35 minutes."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--reps", type=int, default=3, help="repetitions of each scenario")
    p.add_argument("--noop", type=int, default=2000, help="no-op jobs enqueued before start")
    p.add_argument("--slow", type=int, default=200, help="50 ms jobs enqueued before start")
    p.add_argument("--slow-ms", type=float, default=50.0, help="duration of a slow job")
    p.add_argument(
        "--write-noop", type=int, default=2000, help="no-op jobs that write one record to Redis"
    )
    p.add_argument(
        "--write-slow", type=int, default=2000, help="50 ms jobs that write one record to Redis"
    )
    p.add_argument("--latency", type=int, default=200, help="jobs due at distinct instants")
    p.add_argument("--span", type=float, default=10.0, help="seconds the due times cover")
    p.add_argument("--lead", type=float, default=1.5, help="seconds before the first is due")
    p.add_argument("--idle", type=float, default=10.0, help="seconds an idle worker is watched")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before watching")
    p.add_argument("--fork", type=int, default=2000, help="fork cycles per launcher")
    p.add_argument("--claims", type=int, default=20000, help="due tasks per claim measurement")
    p.add_argument("--pending", type=int, default=1_000_000, help="pending tasks, scale test")
    p.add_argument("--pending-small", type=int, default=1000, help="pending tasks, baseline")
    p.add_argument(
        "--only-writes",
        action="store_true",
        help="only the connection scenarios (jobs that write one record to Redis)",
    )
    p.add_argument("--systems", default="", help="comma-separated names (default: all)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip py-spy")
    p.add_argument("--out", type=Path, default=BENCH / "results", help="report directory")
    p.add_argument("--smoke", action="store_true", help="perseid-jobs only, tiny numbers")
    p.add_argument("--render", type=Path, help="only re-render REPORT.md from a results.json")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    return args


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def attempt(what: str, fn: Callable[[], T], failed: Callable[[str], T]) -> T:
    """Run one measurement; a failure is reported and recorded, never fatal to the run."""
    try:
        return fn()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        say(f"{what} failed: {why}")
        return failed(why)


def _nan(_why: str) -> float:
    return math.nan


def machine(server: RedisServer) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    client = Stage(server.url, Path()).client()
    redis_version = str(client.info("server")["redis_version"])
    client.close()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB, Linux"
        f" {platform.release()}",
        "software": f"Python {platform.python_version()}, Redis {redis_version} on loopback",
        "load average at start": load,
    }


def run_system(system: System, runs: SystemRuns, args: argparse.Namespace, stage: Stage) -> None:
    """One repetition of every scenario of one system."""
    if system.classic and not args.only_writes:
        run_classic(system, runs, args, stage)
    if system.writes:
        run_writes(system, runs, args, stage)


def run_writes(system: System, runs: SystemRuns, args: argparse.Namespace, stage: Stage) -> None:
    """The connection scenarios: no-op and 50 ms jobs that each write one record to Redis."""
    for n, sleep_s, into, label in (
        (args.write_noop, 0.0, runs.noop_write, "no-op"),
        (args.write_slow, args.slow_ms / 1000, runs.slow_write, f"{args.slow_ms:g}ms"),
    ):
        sub = Stage(stage.redis_url, stage.work / f"write-{label}")
        timeout = 60 + n / 20 + n * sleep_s
        done = attempt(
            f"{system.name} {label} jobs writing to Redis",
            partial(scenarios.throughput, system, sub, n, sleep_s, timeout, write=True),
            scenarios.Throughput.failed,
        )
        into.append(done)
        say(
            f"{system.name} {label} jobs writing one record: {done.total:.1f} jobs/s"
            f" ({done.running:.1f} once running)"
        )


def run_classic(system: System, runs: SystemRuns, args: argparse.Namespace, stage: Stage) -> None:
    """The no-op, 50 ms, latency and idle scenarios."""

    def sub(name: str) -> Stage:
        return Stage(stage.redis_url, stage.work / name)

    name, timeout = system.name, 60 + args.noop / 20
    noop = attempt(
        f"{name} no-op",
        lambda: scenarios.throughput(system, sub("noop"), args.noop, 0.0, timeout),
        scenarios.Throughput.failed,
    )
    runs.noop.append(noop)
    say(f"{name} no-op: {noop.total:.0f} jobs/s ({noop.running:.0f} once running)")
    slow = attempt(
        f"{name} slow jobs",
        lambda: scenarios.throughput(system, sub("slow"), args.slow, args.slow_ms / 1000, timeout),
        scenarios.Throughput.failed,
    )
    runs.slow.append(slow)
    say(f"{name} {args.slow_ms:g} ms jobs: {slow.running:.1f} jobs/s once running")
    late = attempt(
        f"{name} latency",
        lambda: scenarios.latency(system, sub("latency"), args.latency, args.span, args.lead),
        scenarios.Latency.failed,
    )
    runs.latency.append(late)
    say(f"{name} due → start p50 {late.p50_ms:.1f} ms, p99 {late.p99_ms:.1f} ms")
    quiet = attempt(
        f"{name} idle",
        lambda: scenarios.idle(system, sub("idle"), args.idle, args.settle),
        scenarios.Idle.failed,
    )
    runs.idle.append(quiet)
    say(f"{name} idle: {quiet.cpu_pct:.2f} % CPU, {quiet.calls_per_s:.2f} Redis calls/s")


def run_ceilings(results: Results, args: argparse.Namespace, url: str) -> None:
    """One repetition of the fork ceilings, the claim rates and the scale test."""
    for launchers, warm, into in (
        (1, False, results.fork_one),
        (2, False, results.fork_two),
        (1, True, results.fork_warm),
    ):
        into.append(
            attempt("fork", partial(ceilings.fork_rate, args.fork, launchers, warm=warm), _nan)
        )
    say(f"fork ceiling: {results.fork_one[-1]:.0f}/s, two launchers {results.fork_two[-1]:.0f}/s")
    no_rates = ceilings.ClaimRates(math.nan, math.nan)
    results.raw_claims.append(
        attempt("raw claim", lambda: ceilings.raw_claim_rates(url, args.claims), lambda _: no_rates)
    )
    results.claims.append(
        attempt(
            "claim script",
            lambda: claims.claim_rates(url, args.claims),
            lambda _: claims.PerseidClaims(no_rates, math.nan),
        )
    )
    say(
        f"claims/s: raw {results.raw_claims[-1].single:.0f},"
        f" perseid {results.claims[-1].rates.single:.0f}"
    )
    gap = args.span / max(1, args.latency)  # as far apart as the latency scenario's tasks
    no_wake = ceilings.WakeTimes(gap * 1000, math.nan, math.nan, math.nan, math.nan)
    results.wake.append(
        attempt("wake-up", lambda: ceilings.wake_times(url, gap), lambda _: no_wake)
    )
    no_scale = claims.Scale(0, math.nan, math.nan, 0, math.nan, math.nan)
    for pending, into_scale in (
        (args.pending_small, results.scale_small),
        (args.pending, results.scale_big),
    ):
        scale = attempt(
            f"scale {pending}",
            partial(claims.scale, url, pending, args.claims),
            lambda _: no_scale,
        )
        into_scale.append(scale)
        say(
            f"{pending:,} pending: {scale.claim_rate:.0f} claims/s,"
            f" {scale.bytes_per_task:.0f} B per task"
        )


def chosen_systems(names: str, skipped: dict[str, str]) -> list[System]:
    """The systems to run: those named (all by default) that can run here.

    Each one that cannot goes into ``skipped``, with the reason.
    """
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    out = []
    for system in all_systems():
        if wanted and system.name not in wanted:
            continue
        if not system.available():
            skipped[system.name] = system.unavailable()
            say(f"{system.name}: {skipped[system.name]}; skipped")
            continue
        out.append(system)
    return out


def run(args: argparse.Namespace, server: RedisServer, scratch: Path) -> Results:
    """Every repetition of everything asked for."""
    heartbeat = WorkerSettings(slots=1, jobs_dir=Path()).heartbeat_s
    config = {
        k: getattr(args, k)
        for k in (
            "reps",
            "noop",
            "slow",
            "slow_ms",
            "write_noop",
            "write_slow",
            "latency",
            "span",
            "idle",
            "fork",
            "claims",
            "pending",
        )
    }
    results = Results(machine(server), {**config, "heartbeat_s": heartbeat})
    systems = chosen_systems(args.systems, results.skipped)
    results.systems = [SystemRuns(s.name, s.runs, s.isolates, s.version()) for s in systems]
    for rep in range(args.reps):
        say(f"repetition {rep + 1} of {args.reps}")
        for system, runs in zip(systems, results.systems, strict=True):
            stage = Stage(server.url, scratch / f"r{rep}" / system.name.replace(" ", "-"))
            run_system(system, runs, args, stage)
        if not args.only_writes:
            run_ceilings(results, args, server.url)
    if args.only_writes:
        pass  # no profile either: it profiles the no-op scenario
    elif args.profile and profile.available() and any(s.name == "perseid-jobs" for s in systems):
        say("profiling a perseid-jobs worker with py-spy")
        redis_pid = server.proc.pid if server.proc else 0
        stage = Stage(server.url, scratch / "profile")
        results.profile = attempt(
            "profile",
            lambda: profile.profile_worker(
                stage, args.noop, redis_pid, args.out / "profile-raw.txt"
            ),
            lambda _: None,
        )
    results.machine["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, write ``REPORT.md`` and ``results.json`` to ``--out``, print the report."""
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render is not None:
        report = render(Results.load(args.render))
        (args.out / "REPORT.md").write_text(report)
        print(report)
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="perseid-bench-"))
    (scratch / "redis").mkdir()
    server = RedisServer(directory=scratch / "redis").start()
    try:
        results = run(args, server, scratch)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report = render(results)
    (args.out / "REPORT.md").write_text(report)
    results.save(args.out / "results.json")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
