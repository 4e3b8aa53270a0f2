"""The dashboard over HTTP: routes, the JSON API against the CLI's --json, auth, CSRF, actions.

In-process (Starlette's TestClient) where only the routes matter, and a real
``perseid-jobs dashboard`` process where the server itself does (its one events reader,
its refusal to listen unprotected). Browser tests are in test_dashboard_browser.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.served import NotServedWarning
from perseid_jobs.dashboard.app import create_app
from perseid_jobs.store.redisproc import RedisServer

from .conftest import wait_until, wait_workers
from .dashboard_support import DashboardProc, start_dashboard

__all__ = ["start_dashboard"]  # a fixture, imported to be found

BASE = "http://127.0.0.1:8585"
ORIGIN = {"Origin": BASE}


def web(client: Client, url: str, **kw: object) -> TestClient:
    app = create_app(client, url, allowed_hosts={"127.0.0.1:8585"}, **kw)  # type: ignore[arg-type]
    return TestClient(app, base_url=BASE)


def csrf(tc: TestClient) -> dict[str, str]:
    """The headers of a same-origin POST from a page: Origin and the page's CSRF token."""
    page = tc.get("/tasks")
    token = page.text.split('"X-CSRF-Token": "', 1)[1].split('"', 1)[0]
    return {**ORIGIN, "X-CSRF-Token": token}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *args], capture_output=True, text=True, timeout=60
    )


def test_every_page_and_read_answers(redis_server: RedisServer, client: Client) -> None:
    task = client.schedule("hello", {"name": "Ada"})
    every = client.schedule("hello", {}, every="1h", key="hourly")
    with web(client, redis_server.url) as tc:
        pages = ["/", "/tasks", f"/tasks/{task.id}", "/series", f"/series/{every.series}",
                 "/workers", "/jobs", "/audit", "/tasks?status=pending&q=Ada"]  # fmt: skip
        for path in pages:
            r = tc.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert "text/html" in r.headers["content-type"]
            assert "script-src 'self'" in r.headers["content-security-policy"]
        assert task.id in tc.get("/tasks?q=Ada").text
        assert task.id not in tc.get("/tasks?q=Grace").text
        series_page = tc.get(f"/series/{every.series}").text
        assert series_page.count("<li>") >= 10  # the next 10 runs
        for path in ["/api/tasks", f"/api/tasks/{task.id}", "/api/series",
                     f"/api/series/{every.series}", "/api/workers", "/api/jobs"]:  # fmt: skip
            r = tc.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert tc.get("/api/tasks/01NOSUCHTASK0000000000000").status_code == 404
        assert tc.get("/tasks/01NOSUCHTASK0000000000000").status_code == 404
        r = tc.get("/api/tasks?status=bogus")
        assert r.status_code == 400 and "bogus" in r.json()["error"]
        assert tc.get("/tasks?cursor=not-a-cursor").status_code == 400


def test_the_json_api_is_the_cli_json(redis_server: RedisServer, client: Client) -> None:
    """Each /api/ document is byte for byte what `perseid-jobs ... --json` prints."""
    task = client.schedule("hello", {"name": "Ada"}, at="+1h", tags={"team": "ops"})
    client.schedule("hello", {"name": "Grace"}, at="+1h")
    every = client.schedule("hello", {}, every="1h", key="hourly")
    common = ("--redis", redis_server.url, "--namespace", client.namespace)
    pairs = [
        (["tasks", "--json"], "/api/tasks"),
        (["tasks", "--status", "pending", "--json"], "/api/tasks?status=pending"),
        (["show", task.id, "--json"], f"/api/tasks/{task.id}"),
        (["show", str(every.series), "--json"], f"/api/series/{every.series}"),
        (["series", "--json"], "/api/series"),
        (["tasks", "--tag", "team=ops", "--json"], "/api/tasks?tag=team=ops"),
        (["tasks", "--args-contains", "Ada", "--json"], "/api/tasks?args_contains=Ada"),
        (["workers", "--json"], "/api/workers"),
        (["jobs", "--json"], "/api/jobs"),
    ]
    with web(client, redis_server.url) as tc:
        for argv, path in pairs:
            out = cli(*argv, *common)
            assert out.returncode == 0, out.stderr
            assert orjson.loads(tc.get(path).content) == orjson.loads(out.stdout), path


def test_tasks_pages_follow_each_other_from_redis(
    redis_server: RedisServer, client: Client
) -> None:
    ids = [client.schedule("hello", {"n": n}, at="+1h").id for n in range(120)]
    with web(client, redis_server.url) as tc:
        seen: list[str] = []
        cursor = ""
        for _ in range(5):
            r = tc.get("/tasks", params={"status": "pending", "cursor": cursor})
            assert r.status_code == 200
            page = [i for i in ids if f'data-task="{i}"' in r.text]
            assert len(page) <= 50
            seen += page
            if 'rel="next"' not in r.text:
                break
            cursor = r.text.split('rel="next" href="', 1)[1].split("cursor=", 1)[1].split('"')[0]
            cursor = urllib.parse.unquote(cursor.replace("&amp;", "&"))
        assert sorted(seen) == sorted(ids)  # every task once, over three pages
        only = tc.get("/tasks", params={"q": '"n":7}'}).text
        assert [i for i in ids if f'data-task="{i}"' in only] == [ids[7]]
        by_id = tc.get("/tasks", params={"id": ids[3]}).text
        assert [i for i in ids if f'data-task="{i}"' in by_id] == [ids[3]]


def test_without_the_token_pages_redirect_and_the_api_says_401(
    redis_server: RedisServer, client: Client
) -> None:
    with web(client, redis_server.url, token="s3cret-token") as tc:
        r = tc.get("/tasks", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = tc.get("/api/tasks")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        assert tc.get("/api/events").status_code == 401
        assert tc.get("/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = tc.get("/api/tasks", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        login = tc.get("/login").text
        token = login.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = {"token": "wrong", "csrf_token": token, "next": "/tasks"}
        assert tc.post("/login", data=form).status_code == 401
        form["token"] = "s3cret-token"
        r = tc.post("/login", data=form, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/tasks"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert tc.get("/tasks").status_code == 200  # the cookie now


def test_actions_need_csrf_and_origin_and_are_audited(
    redis_server: RedisServer, client: Client
) -> None:
    task = client.schedule("hello", {}, at="+1h")
    with web(client, redis_server.url) as tc:
        headers = csrf(tc)
        url = f"/api/tasks/{task.id}/cancel"
        assert tc.post(url, headers=ORIGIN).status_code == 403  # no CSRF token
        evil = {**headers, "Origin": "http://evil.example"}
        assert tc.post(url, headers=evil).status_code == 403
        assert tc.post(url, headers={"X-CSRF-Token": headers["X-CSRF-Token"]}).status_code == 403
        assert client.get(task.id).status is TaskStatus.PENDING
        assert tc.get("/api/tasks", headers={"Host": "rebound.example:8585"}).status_code == 421
        r = tc.post(url, headers=headers)
        assert r.status_code == 200, r.text
        assert client.get(task.id).status is TaskStatus.CANCELLED
        assert tc.post(url, headers=headers).status_code == 409  # already ended
        audit = tc.get("/audit").text
        assert "cancel" in audit and task.id in audit and "status cancelled" in audit


def test_read_only_hides_and_refuses_actions(redis_server: RedisServer, client: Client) -> None:
    task = client.schedule("hello", {}, at="+1h")
    every = client.schedule("hello", {}, every="1h", key="hourly")
    with web(client, redis_server.url, read_only=True) as tc:
        headers = csrf(tc)
        assert 'id="cancel"' not in tc.get(f"/tasks/{task.id}").text
        assert 'id="pause"' not in tc.get(f"/series/{every.series}").text
        for url in [f"/api/tasks/{task.id}/cancel", f"/api/series/{every.series}/pause",
                    "/api/jobs/hello/pause"]:  # fmt: skip
            r = tc.post(url, headers=headers)
            assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert client.get(task.id).status is TaskStatus.PENDING
    assert not client.get_series(str(every.series)).paused
    assert client.redis.xlen(client.keys.audit) == 0
    with web(client, redis_server.url) as tc:  # the same page with actions on has them
        assert 'id="cancel"' in tc.get(f"/tasks/{task.id}").text


def test_pages_mask_the_redis_password(redis_server: RedisServer, client: Client) -> None:
    shown = redis_server.url.replace("redis://", "redis://:hunter2@")
    with web(client, shown) as tc:
        page = tc.get("/").text
    assert "hunter2" not in page and ":***@" in page


def test_a_public_host_without_a_token_is_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    out = cli(
        "dashboard", "--host", "0.0.0.0", "--redis", redis_server.url, "--namespace", namespace
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--token" in out.stderr and "--no-auth" in out.stderr
    r = redis.Redis.from_url(redis_server.url)
    assert not r.keys(f"*{namespace}*")  # nothing written


def _sse(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, data
        data += sock.recv(65536)
    return data


@pytest.fixture
def fifty(start_dashboard: object) -> Iterator[tuple[DashboardProc, list[socket.socket]]]:
    dash = start_dashboard()  # type: ignore[operator]
    socks = [_sse(dash.port) for _ in range(50)]
    yield dash, socks
    for s in socks:
        s.close()


def test_fifty_event_streams_cost_one_redis_reader(
    fifty: tuple[DashboardProc, list[socket.socket]], client: Client, raw_redis: redis.Redis
) -> None:
    _, socks = fifty
    for s in socks:
        _read_until(s, b": connected")

    def readers() -> int:
        return sum(1 for c in raw_redis.client_list() if c["cmd"] in ("xread", "xreadgroup"))

    wait_until(lambda: readers() == 1, 10, "the dashboard's events reader")
    task = client.schedule("hello", {}, at="+1h")
    for s in socks:  # every page gets the event, from that one reader
        _read_until(s, task.id.encode())
    assert readers() == 1, raw_redis.client_list()


def test_retry_trigger_and_bulk_actions(redis_server: RedisServer, client: Client) -> None:
    pending = [client.schedule("hello", {"n": n}, at="+1h", tags={"team": "ops"}) for n in range(3)]
    other = client.schedule("noop", {}, at="+1h")
    every = client.schedule("sleep", {}, every="1h", key="hourly")
    with web(client, redis_server.url) as tc:
        headers = csrf(tc)
        tagged = tc.get("/tasks", params={"tag": "team=ops"}).text
        assert all(f'data-task="{t.id}"' in tagged for t in pending)
        assert f'data-task="{other.id}"' not in tagged
        confirm = tc.get("/tasks/bulk", params={"action": "cancel", "job": "hello"})
        assert 'id="bulk-count"' in confirm.text and "<b>3</b>" in confirm.text
        assert all(client.get(t.id).status is TaskStatus.PENDING for t in pending)  # a dry run
        form = {"action": "cancel", "job": "hello", "status": "pending"}
        r = tc.post("/api/tasks/bulk", data=form, headers=headers)
        assert r.status_code == 200 and r.json()["result"] == {"matched": 3}, r.text
        assert all(client.get(t.id).status is TaskStatus.CANCELLED for t in pending)
        assert client.get(other.id).status is TaskStatus.PENDING
        r = tc.post(f"/api/tasks/{pending[0].id}/retry", headers=headers)
        assert r.status_code == 200, r.text
        again = r.json()["result"]
        assert again["retry_of"] == pending[0].id and again["status"] == "pending"
        r = tc.post(f"/api/series/{every.series}/trigger", headers=headers)
        assert r.status_code == 200 and r.json()["result"]["metadata"]["triggered"] is True
        assert "triggered=1" in tc.get(f"/series/{every.series}").text  # the run, and why
        assert (
            tc.post("/api/tasks/bulk", data={"action": "drop"}, headers=headers).status_code == 400
        )
        audit = tc.get("/audit").text
        assert "bulk cancel" in audit and "retry" in audit and "trigger" in audit


def test_drain_stops_a_worker_claiming_and_is_audited(
    redis_server: RedisServer, client: Client, start_worker: Callable[..., object]
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    (inst,) = client.workers()
    key = client.keys.instance(inst.id)
    with web(client, redis_server.url) as tc:
        headers = csrf(tc)
        assert "claiming" in tc.get("/workers").text
        assert tc.post("/api/workers/nosuch/drain", headers=headers).status_code == 404
        r = tc.post(f"/api/workers/{inst.id}/drain", headers=headers)
        assert r.status_code == 200, r.text
        beat = client.redis.hget(key, "heartbeat_at")
        wait_until(lambda: client.redis.hget(key, "heartbeat_at") != beat, 5, "a heartbeat")
        assert client.redis.hget(key, "draining") == "1"  # the worker's heartbeat keeps it
        with pytest.warns(NotServedWarning, match="draining"):  # no instance claims it now
            client.schedule("hello", {})
        assert "draining" in tc.get("/workers").text
        assert "drain" in tc.get("/audit").text


def test_every_partition_is_read(redis_server: RedisServer, namespace: str) -> None:
    """A namespace of 4 partitions on one Redis: pages and counts cover all of them."""
    from .conftest import JOBS

    client = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=4)
    try:
        ids = [client.schedule("hello", {"n": n}, at="+1h").id for n in range(24)]
        spread = {client.partitions().keys.index(client.keys_of(i)) for i in ids}  # type: ignore[arg-type]
        assert len(spread) > 1, spread
        with web(client, redis_server.url) as tc:
            assert 'data-count="pending">24<' in tc.get("/").text
            page = tc.get("/tasks", params={"status": "pending"}).text
            assert all(f'data-task="{i}"' in page for i in ids)
            assert {t["id"] for t in tc.get("/api/tasks").json()} == set(ids)
    finally:
        client.close()
