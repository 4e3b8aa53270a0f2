"""The demo runs the example jobs end to end on the embedded fakeredis server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import JOBS


def test_demo_on_embedded_fakeredis_runs_the_examples_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "perseid_jobs",
            "demo",
            "--duration",
            "6",
            "--backend",
            "fake",
            "--jobs",
            str(JOBS),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "an embedded fakeredis server" in out
    assert "exit code 1: ValueError: a demo failure" in out
    assert "timeout after 2s" in out
    assert "cancelled by the job (exit 100)" in out
    assert "Stopped the workers" in out
    uploaded = {
        p.parent.parent.parent.parent.name for p in (tmp_path / "var/bucket").rglob("*.log")
    }
    assert {"hello", "fail", "heavy", "cancel_self"} <= uploaded
