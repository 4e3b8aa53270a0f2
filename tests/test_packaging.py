"""Building the package prints no warning (issue 13, item 17)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import ROOT

# pip's notices about this machine's index configuration, not about the project.
MACHINE_NOTICE = re.compile(r"^WARNING: Location '.*' is ignored")
# "warning: ...", "WARNING", "SetuptoolsDeprecationWarning: ..." (not a path with "warning_" in it).
WARNING = re.compile(r"\bwarn(ing)?s?\b|warning:", re.IGNORECASE)


def test_build_prints_no_warning_and_ships_the_lua_scripts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # A deprecation in pyproject.toml fails the build. No isolation: the backend is the dev
    # extra's setuptools, so the warnings made errors are the build's, not those of the pip
    # that would install an isolated one (pip 23 warns about its own internals).
    env["PYTHONWARNINGS"] = "error"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    warnings = [
        line
        for line in output.splitlines()
        if WARNING.search(line) and not MACHINE_NOTICE.match(line.strip())
    ]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "perseid_jobs/store/lua/claim.lua" in names and "perseid_jobs/py.typed" in names


def _make_dry_run(target: str, tmp_path: Path) -> str:
    """The commands `make <target>` would run on a fresh clone (no venv yet)."""
    proc = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_cold_make_demo_installs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    demo = _make_dry_run("demo", tmp_path)
    assert "pip install -q -e .\n" in demo and "[dev]" not in demo, demo
    assert "perseid-jobs demo" in demo
    # The tests still get the dev tools, on top of the same venv.
    assert "pip install -q -e '.[dev]'" in _make_dry_run("test", tmp_path)
