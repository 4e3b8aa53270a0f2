"""A real task log read by pino-pretty, the tool pino's users read logs with.

pino-pretty prints a line it cannot parse as it is; every line of the log must
come out as a formatted record instead. pino-pretty is installed with ``npm ci``
from tests/pino/package-lock.json into a cache directory keyed by the lock's
hash, so it is fetched once per machine. Without npm the test is skipped, except
in CI (``CI`` set), where .ci/run installs npm and a skip would hide a failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest

from perseid_jobs.logs.tasklog import TaskLog

from .test_tasklog import run_in_child

PINO_DIR = Path(__file__).parent / "pino"
MARK = "\u00a7\u00a7"  # before each message, so a formatted record is told from a raw line
HEADER = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3}\] (DEBUG|INFO|WARN|ERROR|FATAL) \(\d+\): §§(.*)$")


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("npm is missing in CI: .ci/run installs it (apt-get install npm)")
        pytest.skip("npm not installed (apt-get install npm); CI runs this test")
    return found


def pino_pretty() -> Path:
    """The pinned pino-pretty, installed by `npm ci` into a cache directory once."""
    lock = (PINO_DIR / "package-lock.json").read_bytes()
    key = hashlib.sha256((PINO_DIR / "package.json").read_bytes() + lock).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "perseid-jobs-tests"
    home = base / f"pino-{key}"
    binary = home / "node_modules" / ".bin" / "pino-pretty"
    if binary.exists():
        return binary
    base.mkdir(parents=True, exist_ok=True)
    # Install beside it, then rename: a run interrupted halfway leaves no half install.
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".pino-"))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PINO_DIR / name, staging / name)
        done = subprocess.run(
            [npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
        try:
            staging.rename(home)
        except OSError:  # another run installed it meanwhile
            assert binary.exists()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def write_task_log(path: Path) -> int:
    """A real task's log: records, extras, stdout/stderr, a traceback, then truncation."""
    cap = 6000

    def task(log: TaskLog) -> None:
        log.logger.info("loaded", extra={"batch": 3, "rows": [1, 2], "nested": {"a": None}})
        log.logger.warning("slow step", extra={"seconds": 1.5})
        print("printed line")
        os.write(2, b"raw stderr\n")
        subprocess.run(["sh", "-c", "echo from a subprocess; echo its error >&2"], check=True)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            log.logger.error("task raised", exc_info=exc)
        for n in range(400):  # past the cap: the log ends with the truncation line
            print(f"flood {n} " + "x" * 40)

    _, code = run_in_child(path, task, max_bytes=cap)
    assert code == 0, path.read_text()
    return cap


def test_pino_pretty_formats_every_line_of_a_task_log(tmp_path: Path) -> None:
    binary = pino_pretty()
    path = tmp_path / "01HTASK.log"
    cap = write_task_log(path)
    docs = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert docs[-1]["msg"] == f"log truncated at {cap} bytes; further output discarded"
    assert {"stdout", "stderr"} <= {doc.get("stream") for doc in docs}
    assert any("err" in doc for doc in docs)

    done = subprocess.run(
        [str(binary), "--no-colorize", "--messageFormat", MARK + "{msg}"],
        input=path.read_bytes(), capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().splitlines()
    headers = [m.group(2) for m in map(HEADER.match, out) if m]
    # One formatted record per line of the log, in order: none passed through raw.
    assert headers == [doc["msg"] for doc in docs]
    # Everything else is a record's fields, indented under it; a raw line is not.
    assert not [line for line in out if not HEADER.match(line) and not line.startswith("    ")]
    assert "    batch: 3" in out
    assert '    stream: "stderr"' in out
    assert any(line.strip() == "Traceback (most recent call last):" for line in out)
    assert any(line.strip() == "ValueError: boom" for line in out)
