"""The benchmark runs end to end with tiny numbers (perseid-jobs only), so it cannot rot.

This is not a performance test: it checks that every scenario produced a
measure and the report was written, never how fast anything was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.__main__ import main
from bench.zygote_alone import JOBS, drive


def test_benchmark_smoke_run_measures_every_scenario_and_writes_the_report(
    tmp_path: Path,
) -> None:
    assert main(["--smoke", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    by_name = {s["name"]: s for s in results["systems"]}
    perseid = by_name["perseid-jobs"]
    for scenario, measure in (
        ("noop", "total"),
        ("slow", "total"),
        ("latency", "p99_ms"),
        ("idle", "cpu_pct"),
        ("noop_write", "total"),
        ("slow_write", "running"),
    ):
        [run] = perseid[scenario]
        assert run["error"] == "", f"{scenario}: {run['error']}"
        assert math.isfinite(run[measure]), f"{scenario} measured nothing"
    assert perseid["latency"][0]["early"] == 0, "a task started before its due time"
    for ceiling in ("fork_one", "fork_two", "fork_warm"):
        assert math.isfinite(results[ceiling][0])
    assert math.isfinite(results["raw_claims"][0]["pipelined"])
    assert math.isfinite(results["claims"][0]["batch64"])
    for scale in ("scale_small", "scale_big"):
        assert results[scale][0]["bytes_per_task"] > 0

    # Reused mode (@job(max_tasks_per_process=N)) runs the same throughput scenarios.
    reused = by_name["perseid-jobs reused"]
    for scenario in ("noop", "noop_write", "slow_write"):
        [run] = reused[scenario]
        assert run["error"] == "", f"reused {scenario}: {run['error']}"
        assert math.isfinite(run["running"])

    report = (tmp_path / "REPORT.md").read_text()
    for section in (
        "## Systems",
        "## Jobs that write one record to Redis over their own connection",
        "## Ceilings and the claim path",
        "## Scale",
        "## Targets",
    ):
        assert section in report
    assert "| perseid-jobs " in report
    assert "writing one record: fresh mode 50 ms job, share of the ideal rate" in report


def test_the_zygote_alone_runs_its_starts_and_counts_their_cost() -> None:
    costs = drive(JOBS, "bench_work", 20)
    assert set(costs) == {"starts_per_s", "zygote_ms", "task_ms", "zygote_faults", "task_faults"}
    assert costs["starts_per_s"] > 0
    assert costs["task_faults"] > 0  # 20 forked task processes, each copying pages
