"""The dashboard in a real browser: Debian's chromium driven by Playwright for Python.

Each test runs a real ``perseid-jobs dashboard`` process on the session's Redis (and
workers where a task must run), and a fresh browser context. See dashboard_support.py
for why these fail rather than skip in CI without chromium.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.redisproc import RedisServer

from .conftest import wait_until, wait_workers
from .dashboard_support import DashboardProc, browser, start_dashboard

__all__ = ["browser", "start_dashboard"]  # fixtures, imported to be found

PAGES = ["/", "/tasks", "/series", "/workers", "/jobs", "/audit"]
XSS = {
    "a": "<script>window.__xss = 1; alert(1)</script>",
    "b": '"><img src=x onerror="window.__xss = 2; alert(2)">',
    "c": "'><svg onload=alert(3)>",
}


def open_page(browser: Any, dash: DashboardProc, path: str) -> tuple[Any, list[str]]:
    """A new page at ``path``; the list collects dialogs and console errors (CSP included)."""
    context = browser.new_context()
    page = context.new_page()
    trouble: list[str] = []
    page.on("dialog", lambda d: (trouble.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: trouble.append(f"page error: {e}"))
    page.on("console", lambda m: trouble.append(m.text) if m.type == "error" else None)
    page.goto(dash.base + path)
    return page, trouble


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_every_page_loads_with_no_error(
    browser: Any, start_dashboard: Callable[..., DashboardProc], client: Client
) -> None:
    task = client.schedule("hello", {"name": "Ada"}, at="+1h")
    every = client.schedule("hello", {}, every="1h", key="hourly")
    dash = start_dashboard()
    for path in [*PAGES, f"/tasks/{task.id}", f"/series/{every.series}"]:
        page, trouble = open_page(browser, dash, path)
        page.wait_for_selector("h1")
        if path == "/":
            page.wait_for_selector("#plots .uplot")  # uPlot drew the plots
        assert not trouble, (path, trouble)
        page.context.close()


def test_a_task_scheduled_from_the_cli_appears_live_and_its_end_within_a_second(
    browser: Any,
    start_dashboard: Callable[..., DashboardProc],
    start_worker: Callable[..., Any],
    client: Client,
    redis_server: RedisServer,
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    dash = start_dashboard()
    page, trouble = open_page(browser, dash, "/tasks")
    page.wait_for_selector("#live.on")  # the page's event stream is open
    common = ("--redis", redis_server.url, "--namespace", client.namespace)
    task_id = cli("schedule", "sleep", "--args", '{"seconds": 1.5}', *common)
    row = f'[data-task="{task_id}"]'
    page.wait_for_selector(row, timeout=5000)  # no reload: the event brought it
    ended = client.wait(task_id, timeout=30)
    assert ended.status is TaskStatus.COMPLETED
    start = time.monotonic()
    page.wait_for_selector(f"{row} .status:text('completed')", timeout=1000)
    print(f"\nend shown {time.monotonic() - start:.3f}s after the client saw it end")
    assert not trouble, trouble


def test_cancel_from_the_task_page_cancels_it_in_redis(
    browser: Any, start_dashboard: Callable[..., DashboardProc], client: Client
) -> None:
    task = client.schedule("hello", {}, at="+1h")
    dash = start_dashboard()
    page, trouble = open_page(browser, dash, f"/tasks/{task.id}")
    page.click("#cancel")
    wait_until(lambda: client.get(task.id).status is TaskStatus.CANCELLED, 5, "the cancel")
    page.wait_for_selector("#task-status:text('cancelled')", timeout=2000)
    page.goto(dash.base + "/audit")
    assert task.id in page.inner_text("main") and "cancel" in page.inner_text("main")
    assert not trouble, trouble


def test_read_only_hides_and_refuses_actions_in_the_browser(
    browser: Any, start_dashboard: Callable[..., DashboardProc], client: Client
) -> None:
    task = client.schedule("hello", {}, at="+1h")
    dash = start_dashboard("--read-only")
    page, _ = open_page(browser, dash, f"/tasks/{task.id}")
    page.wait_for_selector("h1")
    assert page.query_selector("#cancel") is None
    assert page.query_selector("button") is None
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    status = page.evaluate(
        "async ([url, token]) => (await fetch(url, {method: 'POST',"
        " headers: {'X-CSRF-Token': token}})).status",
        [f"/api/tasks/{task.id}/cancel", token],
    )
    assert status == 403
    assert client.get(task.id).status is TaskStatus.PENDING


def test_a_task_carrying_markup_renders_inert(
    browser: Any, start_dashboard: Callable[..., DashboardProc], client: Client
) -> None:
    task = client.schedule("hello", XSS, at="+1h")
    dash = start_dashboard()
    for path in ["/tasks", f"/tasks/{task.id}", f"/tasks?q={XSS['a'][:8]}"]:
        page, trouble = open_page(browser, dash, path)
        page.wait_for_selector(f'[data-task="{task.id}"]')
        assert not [t for t in trouble if t.startswith("dialog")], trouble
        assert page.evaluate("window.__xss") is None
        assert (
            page.evaluate("document.querySelectorAll('img, svg[onload], main script').length") == 0
        )
        text = page.inner_text("main")
        assert "<script>" in text or path == "/tasks"  # shown as text, not run
        page.context.close()
    page, _ = open_page(browser, dash, f"/tasks/{task.id}")
    assert XSS["b"] in page.inner_text("#task-args").replace('\\"', '"')


def test_without_the_token_the_browser_logs_in_first(
    browser: Any, start_dashboard: Callable[..., DashboardProc], client: Client
) -> None:
    dash = start_dashboard("--token", "tok-123")
    page, _ = open_page(browser, dash, "/workers")
    assert page.url.startswith(dash.base + "/login")
    page.fill("input[name=token]", "tok-123")
    page.fill("input[name=name]", "ada")
    page.click("button[type=submit]")
    page.wait_for_url(dash.base + "/workers")
    assert page.inner_text("h1") == "Workers"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert (
        cookies["perseid_session"]["httpOnly"]
        and cookies["perseid_session"]["sameSite"] == "Strict"
    )


def test_a_running_tasks_log_is_tailed_live(
    browser: Any,
    start_dashboard: Callable[..., DashboardProc],
    start_worker: Callable[..., Any],
    client: Client,
) -> None:
    worker = start_worker(2)
    wait_workers(client, 1)
    dash = start_dashboard("--logs-dir", str(worker.logs_dir))
    task = client.schedule("sleep", {"seconds": 4})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 10, "the start")
    page, trouble = open_page(browser, dash, f"/tasks/{task.id}")
    page.wait_for_selector("#log:has-text('sleeping')", timeout=5000)  # while it runs
    page.wait_for_selector("#log:has-text('woke up')", timeout=8000)  # appended, no reload
    assert not trouble, trouble
