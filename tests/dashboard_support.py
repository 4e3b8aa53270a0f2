"""What the dashboard tests share: a real ``perseid-jobs dashboard`` process, and chromium.

The browser is Debian's ``chromium`` driven by Playwright for Python (its own browser
download cannot work here). Without it the browser tests skip, except in CI (``CI``
set), where .ci/run installs it and a skip would hide a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .s3_fixtures import free_port

CHROMIUM = "/usr/bin/chromium"


class DashboardProc:
    """A ``perseid-jobs dashboard`` subprocess on a free loopback port."""

    def __init__(self, url: str, namespace: str, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp / f"dashboard-{uuid.uuid4().hex[:6]}.log"
        self._stderr = self.stderr_path.open("wb")
        argv = [sys.executable, "-m", "perseid_jobs", "dashboard", "--port", str(self.port)]
        argv += ["--redis", url, "--namespace", namespace, *extra]
        env = {k: v for k, v in os.environ.items() if k != "PERSEID_DASHBOARD_TOKEN"}
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@pytest.fixture
def start_dashboard(
    redis_server: Any, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., DashboardProc]]:
    """Start dashboards on the session's Redis and the test's namespace; stopped at the end."""
    started: list[DashboardProc] = []

    def start(*extra: str) -> DashboardProc:
        d = DashboardProc(redis_server.url, namespace, tmp_path, *extra)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def chromium() -> str:
    """Debian's chromium, or a skip (a failure in CI)."""
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); CI runs this test")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module's tests (each test opens its own context)."""
    path = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is missing in CI: it is in the dev extras")
        pytest.skip("playwright not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()
