"""The flow-control benchmark runs end to end with tiny numbers, so it cannot rot.

Not a performance test: it checks that every target got a number and a verdict and the
report was written, never how fast anything was.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.flow import main


def test_flow_bench_smoke_measures_every_target_and_writes_the_report(tmp_path: Path) -> None:
    text = main(
        ["--tasks", "200", "--groups", "10", "--backlog", "50", "--paused", "300",
         "--workload", "100", "--rounds", "2", "--reps", "1", "--out", str(tmp_path)]
    )  # fmt: skip
    assert (tmp_path / "FLOW.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    table = rows[1 : rows.index(next(r for r in rows if r.startswith("| command")))]
    names = ("claim throughput, 10 groups", "end → next start, p99", "running while the backlog",
             "of a paused job (paused before", "of a paused job (scheduled, then",
             "one-time cost, paused before", "one-time cost, scheduled, then paused",
             "a paused job with no tasks (paused before", "a paused job with no tasks (scheduled",
             "control: claim µs/call")  # fmt: skip
    for name in names:
        [row] = [r for r in table if name in r]
        measured = row.split(" | ")[2]
        assert re.search(r"\d", measured) and "nan" not in measured, row
    # Each target's verdict was judged; the one-time costs and the control are reported.
    assert sum(r.endswith(("| **met** |", "| not met |")) for r in table) == 5
    assert sum(r.endswith("| n/a |") for r in table) == 5
    # Even at these sizes the limit holds: 4 running at every end while a backlog is left.
    assert "| concurrency=4: running while the backlog lasts | exactly 4 | 4\u20134 " in text
    assert "### Profile" in text
