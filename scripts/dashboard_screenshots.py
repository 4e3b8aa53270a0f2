"""Screenshots of every dashboard page for docs/dashboard.md, taken in Debian's chromium.

    python scripts/dashboard_screenshots.py [--out docs/dashboard]

Starts a private redis-server, two workers on the example jobs, a few tasks (completed,
failed, running, pending, a series, a dependency), ``perseid-jobs dashboard``, and saves
one PNG per page. Everything it starts it stops.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.worker.settings import WorkerSettings, worker_argv

ROOT = Path(__file__).resolve().parent.parent
PORT = 8597
FULL = {"task", "series-one"}  # pages whose lower half matters (timeline, log, runs)


def seed(client: Client) -> dict[str, str]:
    """Tasks for each page to show; returns the ids the pages are opened at."""
    first = [client.schedule("hello", {"name": f"user-{n}"}) for n in range(12)]
    client.schedule("fail", {})
    long = client.schedule("sleep", {"seconds": 60})
    client.schedule("report", {"team": "ops"}, after=long.id)
    client.schedule("hello", {"name": "later"}, at="+10m")
    hourly = client.schedule("hello", {}, cron="0 9 * * MON-FRI", tz="Europe/Paris", key="weekday")
    for t in first:
        client.wait(t.id, timeout=60)
    return {"task": long.id, "series": str(hourly.series)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="perseid-shots-"))
    server = RedisServer(directory=tmp).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(2):
            s = WorkerSettings(slots=4 * (n + 1), jobs_dir=ROOT / "jobs", redis_url=server.url,
                               namespace="shots", logs_dir=tmp / f"logs{n}", drain_timeout_s=2,
                               bucket_url=f"file://{tmp}/bucket")  # fmt: skip
            procs.append(subprocess.Popen(worker_argv(s), stderr=subprocess.DEVNULL))
        client = Client.from_url(server.url, namespace="shots", jobs_dir=ROOT / "jobs")
        while len(client.workers()) < 2:
            time.sleep(0.1)
        ids = seed(client)
        dash = [sys.executable, "-m", "perseid_jobs", "dashboard", "--port", str(PORT),
                "--redis", server.url, "--namespace", "shots",
                "--logs-dir", str(tmp / "logs0")]  # fmt: skip
        procs.append(subprocess.Popen(dash, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{PORT}"
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        pages = {"overview": "/", "tasks": "/tasks", "task": f"/tasks/{ids['task']}",
                 "series": "/series", "series-one": f"/series/{ids['series']}",
                 "workers": "/workers", "jobs": "/jobs", "audit": "/audit"}  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + f"/tasks/{ids['task']}")
            page.click("#cancel")  # one action, so the audit page has an entry
            page.wait_for_selector("#action-result.show")
            for name, path in pages.items():
                page.goto(base + path)
                page.wait_for_selector("h1")
                if name == "overview":
                    page.wait_for_selector("#plots .uplot")
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=name in FULL)
            browser.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
