"""The Markdown report: the systems side by side, the ceilings, the scale test, the targets."""

from __future__ import annotations

import math

from bench.report_writes import write_targets, writes_table
from bench.results import Results, median_or_nan, nested, spread_of
from bench.stats import Spread, num, ratio
from bench.verdicts import Target
from bench.verdicts import check as _check
from bench.verdicts import med as _med

PERSEID = "perseid-jobs"
CELERY = "Celery prefork"
RQ = "RQ"
REUSED = "perseid-jobs reused"


def render(results: Results) -> str:
    """The whole report."""
    parts = [
        "# perseid-jobs benchmark",
        _machine(results),
        "## Systems",
        _systems_table(results),
        _systems_notes(results),
        "## Jobs that write one record to Redis over their own connection",
        writes_table(results),
        "## Ceilings and the claim path",
        _ceilings_table(results),
        "## Scale: claiming among many pending tasks",
        _scale_table(results),
        "## Targets (ratios of medians measured in this run)",
        _targets_table(results),
    ]
    if results.profile is not None:
        parts += ["## Where the perseid-jobs worker spends its time", _profile(results)]
    errors = [f"- {s.name} {e}" for s in results.systems for e in s.errors()]
    if errors:
        parts += ["## Failed repetitions", "\n".join(e.replace("\n", " ") for e in errors)]
    return "\n\n".join(parts) + "\n"


def _machine(results: Results) -> str:
    lines = [f"- {k}: {v}" for k, v in results.machine.items()]
    cfg = ", ".join(f"{k}={v}" for k, v in results.config.items())
    lines.append(f"- settings: {cfg}")
    lines.append("- every cell: median [min–max] over the repetitions")
    return "\n".join(lines)


def _systems_table(results: Results) -> str:
    head = (
        "| system | how a job runs | each job in its own process | no-op jobs/s (from worker"
        " start) | no-op jobs/s once running | 50 ms jobs/s once running | due → start p50 | p99 |"
        " started early | idle CPU | idle Redis calls/s |\n|" + " --- |" * 11
    )
    rows = [head]
    for s in results.systems:
        if not (s.noop or s.slow or s.latency or s.idle):
            continue  # a system of the connection scenarios only (reused mode)
        rows.append(
            f"| {s.name} {s.version} | {s.runs} | {s.isolates} "
            f"| {s.spread('noop', 'total').fmt()} | {s.spread('noop', 'running').fmt()} "
            f"| {s.spread('slow', 'running').fmt(1)} "
            f"| {s.spread('latency', 'p50_ms').fmt(1, ' ms')} "
            f"| {s.spread('latency', 'p99_ms').fmt(1, ' ms')} "
            f"| {s.spread('latency', 'early_pct').fmt(1, ' %')} "
            f"| {s.spread('idle', 'cpu_pct').fmt(2, ' %')} "
            f"| {s.spread('idle', 'calls_per_s').fmt(2)} |"
        )
    return "\n".join(rows)


def _systems_notes(results: Results) -> str:
    notes = []
    for s in results.systems:
        if s.idle:
            kinds = s.idle[-1].by_kind
            seconds = s.idle[-1].seconds
            ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
            calls = ", ".join(f"{k} ×{v}" for k, v in ranked) or "no call"
            notes.append(f"- {s.name}, idle for {seconds:.0f} s (last repetition): {calls}")
    text = "Redis calls of an idle worker, by command (commands run inside scripts not counted):"
    text += "\n\n" + "\n".join(notes)
    for s in results.systems:
        claim, launch = s.spread("latency", "claim_p50_ms"), s.spread("latency", "launch_p50_ms")
        if claim.runs:
            text += (
                f"\n\n{s.name}'s due → start, split at the claim (Redis time of the claim):"
                f" due → claimed p50 {claim.fmt(2, ' ms')}, claimed → job code running p50"
                f" {launch.fmt(2, ' ms')}."
            )
    return text


def _ceilings_table(results: Results) -> str:
    raw, own = results.raw_claims, results.claims
    lines = [
        ("bare `os.fork` + `_exit` + `waitpid`, one launcher", Spread.of(results.fork_one), "/s"),
        ("the same, two launchers in parallel", Spread.of(results.fork_two), "/s"),
        (
            "the same, one launcher that imported what the zygote imports",
            Spread.of(results.fork_warm),
            "/s",
        ),
        (
            "raw Lua claim (ZRANGEBYSCORE + ZREM + HSET) from redis-py, one per call",
            spread_of(raw, "single"),
            "/s",
        ),
        ("the same, pipelined ×100", spread_of(raw, "pipelined"), "/s"),
        ("perseid-jobs `claim` script, one task per call", nested(own, "rates", "single"), "/s"),
        ("the same, pipelined ×100", nested(own, "rates", "pipelined"), "/s"),
        (
            "the same, up to 64 tasks per call (as the worker claims to fill its free slots)",
            spread_of(own, "batch64"),
            "tasks/s",
        ),
        ("Redis time per raw claim call (`INFO commandstats`)", spread_of(raw, "server_us"), "µs"),
        ("Redis time per `claim` script call, one task", nested(own, "rates", "server_us"), "µs"),
    ]
    wake = results.wake
    if wake:
        gap = f"after {wake[0].gap_ms:.0f} ms idle (as far apart as the due → start tasks)"
        lines += [
            (
                "Redis `PING` round trip from redis-py, back to back",
                spread_of(wake, "redis_hot_us"),
                "µs",
            ),
            (f"the same, {gap}", spread_of(wake, "redis_idle_us"), "µs"),
            (
                "a pipe round trip with another process, back to back",
                spread_of(wake, "pipe_hot_us"),
                "µs",
            ),
            (f"the same, {gap}", spread_of(wake, "pipe_idle_us"), "µs"),
        ]
    rows = ["| ceiling or path | rate |", "| --- | --- |"]
    for label, spread, unit in lines:
        rows.append(f"| {label} | {spread.fmt(1 if unit == 'µs' else 0)} {unit} |")
    return "\n".join(rows)


def _scale_table(results: Results) -> str:
    rows = [
        "| pending tasks due tomorrow | claims/s, one per call | claims/s, pipelined ×100 |"
        " Redis time per claim | tasks created/s (pipelined `schedule`) | memory per pending"
        " task (`INFO memory` delta) | `MEMORY USAGE` of one task hash |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runs in (results.scale_small, results.scale_big):
        if not runs:
            continue
        rows.append(
            f"| {runs[0].pending:,} | {spread_of(runs, 'claim_rate').fmt()} "
            f"| {spread_of(runs, 'claim_rate_pipelined').fmt()} "
            f"| {spread_of(runs, 'server_us').fmt(1, ' µs')} "
            f"| {spread_of(runs, 'schedule_rate').fmt()} "
            f"| {spread_of(runs, 'bytes_per_task').fmt(0, ' B')} "
            f"| {spread_of(runs, 'task_hash_bytes').fmt(0, ' B')} |"
        )
    return "\n".join(rows)


def _targets_table(results: Results) -> str:
    rows = ["| target | wanted | measured | verdict |", "| --- | --- | --- | --- |"]
    rows += [t.row() for t in targets(results)]
    return "\n".join(rows)


def targets(results: Results) -> list[Target]:
    """Each target of the issue, judged on this run's medians."""
    return [
        *_throughput_targets(results),
        *write_targets(results),
        *_latency_targets(results),
        *_claim_targets(results),
        *_scale_targets(results),
        *_idle_targets(results),
    ]


def _throughput_targets(results: Results) -> list[Target]:
    """Issue 14's no-op targets: fresh mode against Celery and RQ, reused mode once running."""
    me, reused, celery, rq = (results.system(n) for n in (PERSEID, REUSED, CELERY, RQ))
    out = []
    for measure, label, wanted in (
        ("total", "from worker start", 1.0),
        ("running", "once running", 0.7),
    ):
        r = ratio(_med(me, "noop", measure), _med(celery, "noop", measure))
        out.append(
            Target(
                f"no-op throughput vs Celery prefork ({label})",
                f"≥ {wanted:.1f}×",
                num(r, 2, "×"),
                _check(r, r >= wanted),
            )
        )
    r = ratio(_med(me, "noop", "total"), _med(rq, "noop", "total"))
    out.append(Target("no-op throughput vs RQ", "≥ 5×", num(r, 1, "×"), _check(r, r >= 5)))
    r = ratio(_med(reused, "noop", "running"), _med(celery, "noop", "running"))
    out.append(
        Target(
            "reused mode no-op throughput vs Celery prefork (once running)",
            "≥ 1.5×",
            num(r, 2, "×"),
            _check(r, r >= 1.5),
        )
    )
    two = median_or_nan(Spread.of(results.fork_two))
    r = ratio(_med(me, "noop", "running"), two)
    out.append(
        Target(
            "no-op throughput (once running) as a share of the fork ceiling, two launchers",
            "reported",
            num(100 * r, 0, " %"),
            None,
        )
    )
    return out


def _latency_targets(results: Results) -> list[Target]:
    me, celery = results.system(PERSEID), results.system(CELERY)
    p50, p99 = _med(me, "latency", "p50_ms"), _med(me, "latency", "p99_ms")
    cp99 = _med(celery, "latency", "p99_ms")
    early = max((r.early for r in me.latency), default=0) if me else 0
    return [
        Target("due → start p50", "≤ 2 ms", num(p50, 1, " ms"), _check(p50, p50 <= 2)),
        Target(
            "due → start p99 vs Celery's p99 (idle)",
            "≤ 0.75×",
            f"{num(p99, 1, ' ms')} vs {num(cp99, 1, ' ms')}",
            _check(ratio(p99, cp99), p99 <= 0.75 * cp99),
        ),
        Target(
            "tasks started before their due time",
            "none",
            f"{early} (worst repetition)",
            None if me is None or not me.latency else early == 0,
        ),
    ]


def _claim_targets(results: Results) -> list[Target]:
    out = []
    for mode, label in (("single", "one per call"), ("pipelined", "pipelined ×100")):
        mine = median_or_nan(nested(results.claims, "rates", mode))
        raw = median_or_nan(spread_of(results.raw_claims, mode))
        r = ratio(mine, raw)
        out.append(
            Target(
                f"claim script vs raw Lua claim ({label})",
                "≥ 50 %",
                num(100 * r, 0, " %"),
                _check(r, r >= 0.5),
            )
        )
    return out


def _scale_targets(results: Results) -> list[Target]:
    small = median_or_nan(spread_of(results.scale_small, "claim_rate"))
    big = median_or_nan(spread_of(results.scale_big, "claim_rate"))
    r = ratio(big, small)
    pending = results.scale_big[0].pending if results.scale_big else 0
    base = results.scale_small[0].pending if results.scale_small else 0
    size = median_or_nan(spread_of(results.scale_big, "bytes_per_task"))
    return [
        Target(
            f"claim rate with {pending:,} pending vs {base:,}",
            "≥ 80 %",
            num(100 * r, 0, " %"),
            _check(r, r >= 0.8),
        ),
        Target(
            "Redis memory per pending task",
            "≤ 400 B",
            num(size, 0, " B"),
            _check(size, size <= 400),
        ),
    ]


def _idle_targets(results: Results) -> list[Target]:
    me = results.system(PERSEID)
    cpu = _med(me, "idle", "cpu_pct")
    heartbeat = float(results.config.get("heartbeat_s", 5.0))
    worst, verdict = "n/a", None
    if me is not None and me.idle and not math.isnan(me.idle[-1].cpu_pct):
        runs = [r for r in me.idle if r.seconds]
        limits = [r.seconds / heartbeat + 1 for r in runs]
        busiest = [r.busiest() for r in runs]
        verdict = all(
            rate * r.seconds <= lim for (_, rate), r, lim in zip(busiest, runs, limits, strict=True)
        )
        kind, rate = max(busiest, key=lambda kr: kr[1])
        worst = f"{kind or 'no call'} {rate:.2f}/s (heartbeat {1 / heartbeat:.2f}/s)"
    return [
        Target("idle worker CPU", "< 1 %", num(cpu, 2, " %"), _check(cpu, cpu < 1)),
        Target(
            "idle worker: no call more often than the heartbeat",
            f"each kind ≤ 1 per {heartbeat:g} s",
            worst,
            verdict,
        ),
    ]


def _profile(results: Results) -> str:
    p = results.profile
    assert p is not None
    c = p.cpu
    per = 1000 / c.tasks if c.tasks else math.nan
    rows = [
        f"{c.tasks:,} no-op tasks in {c.wall_s:.1f} s with py-spy attached (250 Hz); CPU"
        " seconds and minor page faults (in a forked process, copy-on-write copies) by"
        " process, and per task:\n",
        "| process | CPU s | CPU ms per task | page faults per task |",
        "| --- | --- | --- | --- |",
    ]
    for label, secs, faults in (
        ("worker (loop, log shipper, heartbeat)", c.worker_s, c.worker_faults),
        ("zygote (forks, reaps)", c.zygote_s, c.zygote_faults),
        ("task processes (reaped children of the zygote)", c.task_processes_s,
         c.task_processes_faults),
        ("redis-server", c.redis_s, None),
    ):  # fmt: skip
        shown = "—" if not faults else f"{faults * per / 1000:.0f}"
        rows.append(f"| {label} | {secs:.2f} | {secs * per:.2f} | {shown} |")
    for who, top in sorted(p.top_self.items()):
        total = p.samples.get(who, 0)
        rows.append(f"\n**{who}** ({total:,} samples): functions on top of the stack\n")
        rows.append("| samples | share | function |\n| --- | --- | --- |")
        rows += [f"| {n} | {100 * n / total:.0f} % | `{fn}` |" for fn, n in top[:8]]
    rows.append(f"\nRaw samples (collapsed stacks): `{p.raw_path}`")
    return "\n".join(rows)
