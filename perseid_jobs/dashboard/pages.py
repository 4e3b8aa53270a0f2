"""The HTML pages: overview, tasks, a task, series, a series, workers, jobs, audit, login.

Each page that updates live also answers ``?fragment=1`` with only its changing part,
which the page's script fetches again when an event arrives (see static/dashboard.js).
"""

from __future__ import annotations

import contextlib
import hmac
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..api import documents
from ..core.errors import InvalidArgs, PerseidError, TaskNotFound
from ..core.models import TaskStatus
from . import audit, listing, overview, taskview
from .app import Dashboard
from .auth import NAME_COOKIE, SESSION_COOKIE, csrf_ok, form_of

PAGE_SIZE = 50


def _fragment(request: Request) -> bool:
    return request.query_params.get("fragment") == "1"


def home(dash: Dashboard, request: Request) -> Response:
    ov = overview.read_overview(dash.client)
    template = "overview_body.html" if _fragment(request) else "overview.html"
    return dash.page(request, template, ov=ov)


def _time_param(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgs(
            f"{name} {text!r}: use an ISO-8601 time, e.g. 2026-05-01T07:00Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def task_filter(request: Request) -> listing.TaskFilter:
    """The tasks page's filter from its query string."""
    q = request.query_params
    return listing.TaskFilter(
        status=q.get("status", "any") or "any",
        job=q.get("job", "").strip(),
        series=q.get("series", "").strip(),
        group=q.get("group", "").strip(),
        tag=q.get("tag", "").strip(),
        text=q.get("q", ""),
        since=_time_param(request, "since"),
        until=_time_param(request, "until"),
    )


def tasks(dash: Dashboard, request: Request) -> Response:
    try:
        flt = task_filter(request)
        task_id = request.query_params.get("id", "").strip()
        if task_id:
            found = listing.find_by_id(dash.client, task_id)
            page = listing.Page([found] if found else [], None, 1)
        else:
            cursor = request.query_params.get("cursor", "")
            page = listing.task_page(dash.client, flt, cursor, PAGE_SIZE)
    except InvalidArgs as exc:
        return dash.page(request, "error.html", 400, message=str(exc))
    template = "tasks_body.html" if _fragment(request) else "tasks.html"
    statuses = ["any", "pending", "running", "ended", *(s.value for s in TaskStatus if s.terminal)]
    return dash.page(
        request,
        template,
        page=page,
        flt=flt,
        query=flt.query(),
        task_id=task_id,
        statuses=statuses,
        cursor=request.query_params.get("cursor", ""),
        bulk_query={k: v for k, v in flt.query().items() if k in ("job", "status", "group")},
    )


def bulk(dash: Dashboard, request: Request) -> Response:
    """The bulk action's confirmation: how many tasks it would touch (a dry run)."""
    from .api import bulk_count, bulk_params

    q = request.query_params
    try:
        what, how = bulk_params(q)
        count = bulk_count(dash, what, how)
    except PerseidError as exc:
        return dash.page(request, "bulk.html", 400, what=q.get("action", ""), error=str(exc))
    form = {"action": what, **{k: str(v) for k, v in how.items() if v is not None}}
    if "since" in form:
        form["since_s"] = form.pop("since")
    return dash.page(request, "bulk.html", what=what, how=how, count=count, form=form, error="")


def task(dash: Dashboard, request: Request) -> Response:
    task_id = request.path_params["task_id"]
    try:
        doc = documents.task_document(dash.client, task_id)
    except TaskNotFound as exc:
        return dash.page(request, "error.html", 404, message=str(exc))
    view = taskview.read(dash.client, doc, dash.logs_dir)
    template = "task_body.html" if _fragment(request) else "task.html"
    return dash.page(request, template, t=doc, view=view)


def task_log(dash: Dashboard, request: Request) -> Response:
    """The task's log as stored (NDJSON), as a download."""
    task_id = request.path_params["task_id"]
    try:
        t = dash.client.get(task_id)
    except TaskNotFound as exc:
        return Response(str(exc) + "\n", 404, media_type="text/plain")
    data, where = taskview.log_bytes(t, dash.logs_dir)
    if data is None:
        return Response(where + "\n", 404, media_type="text/plain")
    headers = {"Content-Disposition": f'attachment; filename="{task_id}.ndjson"'}
    return Response(data, media_type="application/x-ndjson", headers=headers)


def series_list(dash: Dashboard, request: Request) -> Response:
    found = documents.series_list_document(dash.client, limit=200)
    return dash.page(request, "series.html", series=found)


def series_one(dash: Dashboard, request: Request) -> Response:
    series_id = request.path_params["series_id"]
    try:
        doc = documents.series_document(dash.client, series_id)
    except PerseidError as exc:
        return dash.page(request, "error.html", 404, message=str(exc))
    extra = taskview.series_extra(dash.client, doc["series"])
    template = "series_body.html" if _fragment(request) else "series_one.html"
    return dash.page(request, template, doc=doc, s=doc["series"], extra=extra)


def workers(dash: Dashboard, request: Request) -> Response:
    live = documents.workers_document(dash.client)
    running = taskview.instance_tasks(dash.client, live)
    draining = taskview.draining(dash.client, live)
    template = "workers_body.html" if _fragment(request) else "workers.html"
    return dash.page(request, template, workers=live, running=running, draining=draining)


def jobs(dash: Dashboard, request: Request) -> Response:
    found = documents.jobs_document(dash.client)
    paused = dash.client.paused()
    return dash.page(request, "jobs.html", jobs=found, paused=paused)


def audit_page(dash: Dashboard, request: Request) -> Response:
    return dash.page(request, "audit.html", entries=audit.recent(dash.client))


def login(dash: Dashboard, request: Request) -> Response:
    nxt = request.query_params.get("next", "/")
    return dash.page(request, "login.html", next=_safe_next(nxt), failed=False)


async def login_post(dash: Dashboard, request: Request) -> Response:
    form = await form_of(request)
    nxt = _safe_next(str(form.get("next", "/")))
    given = str(form.get("token", ""))
    token = dash.auth.token
    if token is None or not hmac.compare_digest(given.encode(), token.encode()):
        return dash.page(request, "login.html", 401, next=nxt, failed=True)
    if not csrf_ok(dash.auth, request, form):
        return dash.page(request, "login.html", 403, next=nxt, failed=True)
    response = RedirectResponse(nxt, 303)
    secure = request.url.scheme == "https"
    value = dash.auth.session_value()
    response.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="strict", secure=secure)
    name = str(form.get("name", "")).strip()[:64]
    if name:
        response.set_cookie(NAME_COOKIE, name, httponly=True, samesite="strict", secure=secure)
    return response


def logout(dash: Dashboard, request: Request) -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _safe_next(nxt: str) -> str:
    """Only a path of this site: never an open redirect."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"


def healthz(dash: Dashboard, request: Request) -> Response:
    with contextlib.suppress(Exception):
        dash.client.redis.ping()
        return Response("ok\n", media_type="text/plain")
    return Response("redis unavailable\n", 503, media_type="text/plain")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/", home, ["GET"]),
    ("/tasks", tasks, ["GET"]),
    ("/tasks/bulk", bulk, ["GET"]),
    ("/tasks/{task_id}", task, ["GET"]),
    ("/tasks/{task_id}/log", task_log, ["GET"]),
    ("/series", series_list, ["GET"]),
    ("/series/{series_id}", series_one, ["GET"]),
    ("/workers", workers, ["GET"]),
    ("/jobs", jobs, ["GET"]),
    ("/audit", audit_page, ["GET"]),
    ("/login", login, ["GET"]),
    ("/login", login_post, ["POST"]),
    ("/logout", logout, ["GET"]),
    ("/healthz", healthz, ["GET"]),
]
