"""The cluster benchmark runs on real redis-server processes and yields every figure."""

from __future__ import annotations

from pathlib import Path

from bench.cluster import main


def test_cluster_bench_smoke_prints_every_target_and_writes_the_table(tmp_path: Path) -> None:
    text = main(
        ["--tasks", "20", "--primaries", "3", "--out", str(tmp_path), "--price-calls", "30"]
    )
    for name in ("capacity, 1", "spread, 3", "overhead, 3", "capacity, 3", "end to end",
                 "memory per pending task"):  # fmt: skip
        assert f"| {name}" in text
    assert "exactly once: True" in text
    assert "3 plain servers alone cost" in text  # the machine's own price, in the same run
    assert text.count("| n/a |") == 1  # every verdict but the baseline's was judged
    assert (tmp_path / "CLUSTER.md").read_text() == text
