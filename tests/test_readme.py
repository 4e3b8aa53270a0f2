"""Every ```sh and ```python block of README.md and docs/*.md runs as written (issue 13).

Each block runs in a directory of its own holding a copy of the example jobs (as
the repository root does), against this session's private Redis and a fresh
namespace (``PERSEID_REDIS_URL``, ``PERSEID_NAMESPACE``), with a worker serving
the example jobs. A block that cannot run here is listed in ``CANNOT_RUN`` with
the reason; every other block must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from perseid_jobs.cli import cli
from perseid_jobs.store.redisproc import RedisServer

from .conftest import EXAMPLE_JOBS, ROOT, WorkerProc

cli.register_commands()  # the commands defined in other modules (run, show, wait, worker, ...)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>sh|python)\s*$")

# (file, first line of the block) -> why it does not run in the suite.
CANNOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "make demo    # sets itself up, then runs the example jobs on an embedded"
     " default (Ctrl-C stops)"): "make test would run the suite inside itself; the demo runs"
    " in tests/test_demo.py",
    ("README.md", "make install                   # venv + package + dev tools (`make demo`"
     " needs only the runtime)"): "the suite runs in the venv this block makes",
    ("README.md", "perseid-jobs schedule hello --durable"): "needs a replica (tests/test_durable.py"
    " and tests/chaos/test_cluster.py cover --durable)",
    ("README.md", "make test        # the whole suite (private redis-server per session, never"
     " 6379)"): "make test and make chaos would run the suite inside itself; make bench takes"
    " half an hour and installs peers; helm-check installs pinned tools from PyPI",
    ("docs/benchmark.md", "make bench                          # installs the peers, runs"
     " everything 3 times"): "the benchmark takes half an hour (tests/test_bench_smoke.py runs"
    " its scenarios)",
    ("docs/deploy.md", "docker build -t registry.example.com/perseid-jobs:0.1.0 ."): "needs docker"
    " and a registry",
    ("docs/deploy.md", "docker run --init --rm --name perseid-worker \\"): "needs docker",
    ("docs/deploy.md", "kubectl create namespace perseid"): "needs a Kubernetes cluster",
    ("docs/deploy.md", "helm install perseid-jobs helm/perseid-jobs -n perseid -f my-values.yaml"):
    "needs a Kubernetes cluster",
    ("docs/deploy.md", "kubectl -n perseid exec deploy/perseid-jobs-heavy -- perseid-jobs schedule"
     " hello --args '{\"name\":\"Ada\"}'"): "needs a Kubernetes cluster",
    ("docs/deploy.md", "helm upgrade --install perseid-jobs helm/perseid-jobs -n perseid -f"
     " my-values.yaml \\"): "needs a Kubernetes cluster",
    ("docs/deploy.md", "make helm-check"): "installs pinned tools from PyPI (make helm-check is"
    " its own CI step)",
    ("docs/logs.md", "aws s3api put-bucket-lifecycle-configuration --bucket my-bucket \\"): "needs"
    " an AWS account",
    ("docs/async.md", "# app.py: run with `uvicorn app:app` (pip install fastapi uvicorn)"):
    "FastAPI is not a dependency; the asyncio block before it runs the same calls",
}  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


def blocks() -> list[Block]:
    """Every ```sh and ```python block of the documents, in order."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            indent, start, body = m["indent"], i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][len(indent) :])
                i += 1
            doc = str(path.relative_to(ROOT))
            found.append(Block(doc, start + 1, m["lang"], "\n".join(body) + "\n"))
            i += 1
    return found


ALL = blocks()
RUNNABLE = [b for b in ALL if (b.doc, b.first_line) not in CANNOT_RUN]


def test_every_block_that_cannot_run_is_still_in_the_docs() -> None:
    present = {(b.doc, b.first_line) for b in ALL}
    assert sorted(set(CANNOT_RUN) - present) == [], "stale CANNOT_RUN entries"
    assert any(b.doc == "README.md" for b in RUNNABLE)


def _stop_group(pgid: int, timeout: float = 30) -> None:
    """SIGTERM what a block left running (a worker started with ``&``), then SIGKILL."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.doc}:{b.line}" for b in RUNNABLE])
def test_block_runs_as_written(
    block: Block,
    redis_server: RedisServer,
    namespace: str,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProc],
) -> None:
    cwd = tmp_path / "repo"
    shutil.copytree(EXAMPLE_JOBS, cwd / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    worker = start_worker(1024, jobs=cwd / "jobs")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PERSEID_REDIS_URL": redis_server.url,
        "PERSEID_NAMESPACE": namespace,
        "PERSEID_BUCKET": f"file://{worker.bucket}",  # where the suite's worker uploads
    }
    script = cwd / ("block.sh" if block.lang == "sh" else "block.py")
    script.write_text(block.text)
    argv = ["bash", "-e", str(script)] if block.lang == "sh" else [sys.executable, str(script)]
    # Files, not pipes: a worker the block starts with `&` keeps its stdout open after
    # the block ends, and the block's end is what is awaited.
    out_path, err_path = cwd / "stdout", cwd / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=90)
        finally:
            _stop_group(proc.pid)
    output = f"{out_path.read_text()}\n{err_path.read_text()}"
    assert code == 0, f"{block.doc}:{block.line} exited {code}\n{output}"
    assert "Traceback" not in output, output


def env_table_of_the_app() -> str:
    """The README's table of environment variables, generated from the command line."""
    rows: dict[tuple[str, str], list[str]] = {}
    for name, command in typer.main.get_command(cli.app).commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            for var in [param.envvar] if isinstance(param.envvar, str) else param.envvar or []:
                rows.setdefault((param.opts[0], var), []).append(name)
    lines = ["| option | variable | commands |", "| --- | --- | --- |"]
    for (opt, var), names in sorted(rows.items(), key=lambda kv: (-len(kv[1]), kv[0][1])):
        lines.append(f"| `{opt}` | `{var}` | {', '.join(sorted(names))} |")
    return "\n".join(lines)


def test_readme_lists_exactly_the_options_that_read_an_environment_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- env-table[^>]*-->\n(.*?)\n<!-- end env-table -->", readme, re.DOTALL)
    assert m, "README.md has no env-table section"
    expected = env_table_of_the_app()
    # Rows in any order: a reader's order (the common options first) is the README's choice.
    assert sorted(m[1].splitlines()) == sorted(expected.splitlines()), (
        f"README.md's env-table should have these rows:\n{expected}"
    )


def test_readme_job_example_is_the_example_job_file() -> None:
    (example,) = [b for b in ALL if b.doc == "README.md" and "@job(" in b.text]
    assert example.text == (EXAMPLE_JOBS / "report.py").read_text()
