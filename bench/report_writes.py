"""The report's part on the connection scenarios: jobs that write one record to Redis."""

from __future__ import annotations

from bench.results import Results
from bench.stats import Spread, num, ratio
from bench.verdicts import Target
from bench.verdicts import check as _check
from bench.verdicts import med as _med

PERSEID = "perseid-jobs"
REUSED = "perseid-jobs reused"
CELERY = "Celery prefork"


def _ideal(results: Results) -> float:
    """The 50 ms job's ideal rate: concurrency 2, nothing but the sleep."""
    return 2 / (float(results.config.get("slow_ms", 50.0)) / 1000)


def writes_table(results: Results) -> str:
    """The systems side by side on the connection scenarios; reused mode's reason if skipped."""
    slow_ms = float(results.config.get("slow_ms", 50.0))
    ideal = _ideal(results)
    counts = (results.config.get("write_noop", "?"), results.config.get("write_slow", "?"))
    lines = [
        f"Each job opens its own redis-py client (not the job system's connection), the first"
        f" time its process runs it, and RPUSHes one record; {counts[0]} no-op jobs and"
        f" {counts[1]} {slow_ms:g} ms jobs enqueued before the worker starts, concurrency 2."
        f" The ideal rate of the {slow_ms:g} ms job is {ideal:g}/s. Targets: fresh mode"
        " ≥ 0.8× Celery prefork from start; the 50 ms job ≥ 90 % of the ideal rate in fresh"
        " mode; reused mode ≥ 1.2× Celery prefork once running.\n",
        f"| system | no-op jobs/s from worker start | no-op jobs/s once running | {slow_ms:g} ms"
        f" jobs/s from worker start | {slow_ms:g} ms jobs/s once running | share of the ideal"
        " (once running) |",
        "|" + " --- |" * 6,
    ]
    for s in results.systems:
        if not (s.noop_write or s.slow_write):
            continue
        share = Spread.of([100 * r.running / ideal for r in s.slow_write])
        lines.append(
            f"| {s.name} {s.version} | {s.spread('noop_write', 'total').fmt()} "
            f"| {s.spread('noop_write', 'running').fmt()} "
            f"| {s.spread('slow_write', 'total').fmt(1)} "
            f"| {s.spread('slow_write', 'running').fmt(1)} | {share.fmt(0, ' %')} |"
        )
    for name, why in results.skipped.items():
        if name == REUSED:
            lines.append(f"| {name} | {why} | | | | |")
    return "\n".join(lines)


def write_targets(results: Results) -> list[Target]:
    """The issue's targets for jobs that write to Redis (issue 14, warm connections)."""
    me, reused, celery = (results.system(n) for n in (PERSEID, REUSED, CELERY))
    fresh = ratio(_med(me, "noop_write", "total"), _med(celery, "noop_write", "total"))
    share = ratio(_med(me, "slow_write", "running"), _ideal(results))
    out = [
        Target(
            "writing one record: fresh mode no-op vs Celery prefork (from worker start)",
            "≥ 0.8×",
            num(fresh, 2, "×"),
            _check(fresh, fresh >= 0.8),
        ),
        Target(
            "writing one record: fresh mode 50 ms job, share of the ideal rate",
            "≥ 90 %",
            num(100 * share, 0, " %"),
            _check(share, share >= 0.9),
        ),
    ]
    r = ratio(_med(reused, "noop_write", "running"), _med(celery, "noop_write", "running"))
    measured = num(r, 2, "×")
    if reused is None and REUSED in results.skipped:
        measured = results.skipped[REUSED]
    out.append(
        Target(
            "writing one record: reused mode no-op vs Celery prefork (once running)",
            "≥ 1.2×",
            measured,
            _check(r, r >= 1.2),
        )
    )
    return out
