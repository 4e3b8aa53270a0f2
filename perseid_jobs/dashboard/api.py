"""The JSON API (the command line's ``--json`` documents), server-sent events, and actions.

Reads return what ``perseid-jobs ... --json`` prints, built by the same functions
(:mod:`perseid_jobs.api.documents`). Actions are POSTs that the auth middleware has let
through (token, Origin/Host); here each is checked for its CSRF token and refused
with 403 in read-only mode, then run, then recorded in the audit stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..api import documents
from ..core.errors import InvalidArgs, PerseidError, SeriesNotFound, TaskNotFound, UnknownId
from ..core.models import TaskStatus, to_json
from . import audit
from .app import Dashboard
from .auth import NAME_COOKIE, bearer_ok, csrf_ok, form_of

KEEPALIVE_S = 15.0


def _json(doc: Any, status: int = 200) -> Response:
    return Response(to_json(doc) + b"\n", status, media_type="application/json")


def _error(exc: Exception | str, status: int) -> Response:
    return JSONResponse({"error": str(exc)}, status)


def _read(make: Callable[[], Any]) -> Response:
    """A read's document, or its error as JSON (404 for an unknown id, 400 for bad input)."""
    try:
        return _json(make())
    except (TaskNotFound, SeriesNotFound, UnknownId) as exc:
        return _error(exc, 404)
    except (InvalidArgs, ValueError) as exc:
        return _error(exc, 400)


def api_tasks(dash: Dashboard, request: Request) -> Response:
    q = request.query_params

    def make() -> Any:
        status = q.get("status") or None
        if status is not None and status not in {s.value for s in TaskStatus}:
            raise InvalidArgs(
                f"status {status!r}: use pending, running, completed, failed, cancelled"
            )
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise InvalidArgs(f"limit {q.get('limit')!r}: give a number from 1 to 10000") from None
        if not 1 <= limit <= 10000:
            raise InvalidArgs(f"limit {limit}: give a number from 1 to 10000")
        return documents.tasks_document(
            dash.client, status=status, job=q.get("job") or None, limit=limit,
            waiting=q.get("waiting") or None, tag=q.getlist("tag") or None,
            args_contains=q.get("args_contains") or None,
        )  # fmt: skip

    return _read(make)


def api_task(dash: Dashboard, request: Request) -> Response:
    return _read(lambda: documents.task_document(dash.client, request.path_params["task_id"]))


def api_series_list(dash: Dashboard, request: Request) -> Response:
    return _read(lambda: documents.series_list_document(dash.client))


def api_series(dash: Dashboard, request: Request) -> Response:
    return _read(lambda: documents.series_document(dash.client, request.path_params["series_id"]))


def api_workers(dash: Dashboard, request: Request) -> Response:
    return _read(lambda: documents.workers_document(dash.client))


def api_jobs(dash: Dashboard, request: Request) -> Response:
    return _read(lambda: documents.jobs_document(dash.client))


async def api_events(dash: Dashboard, request: Request) -> Response:
    """Server-sent events: every entry of the events streams from now on, as JSON."""
    queue = dash.hub.subscribe()

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield b"data: " + data + b"\n\n"
        finally:
            dash.hub.unsubscribe(queue)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


# -- actions -------------------------------------------------------------------------------
def who(dash: Dashboard, request: Request) -> str:
    """Who acted, for the audit trail: the name given at login, the address, how they got in."""
    how = "bearer" if bearer_ok(dash.auth, request) else "cookie" if dash.auth.token else "no-auth"
    name = request.cookies.get(NAME_COOKIE) or request.headers.get("x-perseid-user") or "-"
    host = request.client.host if request.client else "-"
    return f"{name[:64]} ({host}, {how})"


async def _guard(dash: Dashboard, request: Request) -> Response | None:
    """403 in read-only mode or without the CSRF token (Bearer calls need none)."""
    if dash.auth.read_only:
        return _error("the dashboard is read-only (--read-only): actions are refused", 403)
    if bearer_ok(dash.auth, request):
        return None
    if not csrf_ok(dash.auth, request, await form_of(request)):
        return _error("missing or wrong CSRF token: reload the page and try again", 403)
    return None


def _act(
    dash: Dashboard, request: Request, action: str, target: str, run: Callable[[], Any]
) -> Response:
    """Run an action, record it, and answer its result (or its error, recorded nowhere)."""
    try:
        result = run()
    except (TaskNotFound, SeriesNotFound, UnknownId) as exc:
        return _error(exc, 404)
    except PerseidError as exc:
        return _error(exc, 409)
    audit.record(dash.client, who(dash, request), action, target, _outcome(result))
    if request.headers.get("hx-request"):
        return Response(f"{action}: {_outcome(result)}", media_type="text/plain")
    return _json({"action": action, "target": target, "result": result})


def _outcome(result: Any) -> str:
    status = getattr(result, "status", None)
    if status is not None:
        made = f"task {result.id} " if hasattr(result, "job") else ""
        return f"{made}status {getattr(status, 'value', status)}"
    return str(result)


def action(name: str, run: Callable[[Dashboard, Request], Any], target: str) -> Any:
    """An action route: guard, run, record."""

    async def handler(dash: Dashboard, request: Request) -> Response:
        refused = await _guard(dash, request)
        if refused is not None:
            return refused
        what = request.path_params.get(target, "")
        return await asyncio.to_thread(_act, dash, request, name, what, lambda: run(dash, request))

    return handler


def _drain(dash: Dashboard, request: Request) -> dict[str, Any]:
    """Drain an instance: it claims no more tasks, and those it runs finish (its lease holds)."""
    instance = request.path_params["instance_id"]
    if instance not in {w.id for w in dash.client.workers()}:
        raise UnknownId(instance)
    for keys in dash.client.partitions():
        dash.client.scripts_in(keys).drain(instance)
    return {"instance": instance, "draining": True}


def _pause_job(pause: bool) -> Callable[[Dashboard, Request], Any]:
    def run(dash: Dashboard, request: Request) -> Any:
        job = request.path_params["job"]
        if pause:
            return {"job": job, "changed": dash.client.pause(job=job)}
        return {"job": job, "changed": dash.client.resume(job=job)}

    return run


def bulk_params(fields: Any) -> tuple[str, dict[str, Any]]:
    """The bulk action and its filter (job, status, group, since) from a query or a form."""
    what = str(fields.get("action", ""))
    if what not in ("cancel", "retry"):
        raise InvalidArgs(f"bulk action {what!r}: use cancel or retry")
    how: dict[str, Any] = {"job": str(fields.get("job", "")) or None}
    default = "pending" if what == "cancel" else "failed"
    how["status"] = str(fields.get("status", "")) or default
    if how["status"] in ("any", "ended"):
        how["status"] = default
    if what == "cancel":
        how["group"] = str(fields.get("group", "")) or None
    elif since := str(fields.get("since_s", "")):
        try:
            how["since"] = float(since)
        except ValueError:
            raise InvalidArgs(f"since_s {since!r}: give seconds, e.g. 3600") from None
    return what, how


def bulk_count(dash: Dashboard, what: str, how: dict[str, Any]) -> int:
    """How many tasks the bulk action would touch (a dry run: nothing written)."""
    run = dash.client.cancel_many if what == "cancel" else dash.client.retry_many
    return int(run(**how, dry_run=True))


async def api_bulk(dash: Dashboard, request: Request) -> Response:
    """Cancel or retry every task the filter matches (the tasks page's bulk action)."""
    refused = await _guard(dash, request)
    if refused is not None:
        return refused
    form = await form_of(request)
    try:
        what, how = bulk_params(form)
    except InvalidArgs as exc:
        return _error(exc, 400)
    run = dash.client.cancel_many if what == "cancel" else dash.client.retry_many
    target = " ".join(f"{k}={v}" for k, v in how.items() if v is not None)
    name = f"bulk {what}"
    return await asyncio.to_thread(
        _act, dash, request, name, target, lambda: {"matched": run(**how)}
    )


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/tasks", api_tasks, ["GET"]),
    ("/api/tasks/{task_id}", api_task, ["GET"]),
    ("/api/series", api_series_list, ["GET"]),
    ("/api/series/{series_id}", api_series, ["GET"]),
    ("/api/workers", api_workers, ["GET"]),
    ("/api/jobs", api_jobs, ["GET"]),
    ("/api/events", api_events, ["GET"]),
    (
        "/api/tasks/{task_id}/cancel",
        action("cancel", lambda d, r: d.client.cancel(r.path_params["task_id"]), "task_id"),
        ["POST"],
    ),
    (
        "/api/series/{series_id}/pause",
        action(
            "pause",
            lambda d, r: {"changed": d.client.pause(series=r.path_params["series_id"])},
            "series_id",
        ),
        ["POST"],
    ),
    (
        "/api/series/{series_id}/resume",
        action(
            "resume",
            lambda d, r: {"changed": d.client.resume(series=r.path_params["series_id"])},
            "series_id",
        ),
        ["POST"],
    ),
    ("/api/jobs/{job}/pause", action("pause job", _pause_job(True), "job"), ["POST"]),
    ("/api/jobs/{job}/resume", action("resume job", _pause_job(False), "job"), ["POST"]),
    ("/api/workers/{instance_id}/drain", action("drain", _drain, "instance_id"), ["POST"]),
    (
        "/api/tasks/{task_id}/retry",
        action("retry", lambda d, r: d.client.retry(r.path_params["task_id"]), "task_id"),
        ["POST"],
    ),
    (
        "/api/series/{series_id}/trigger",
        action("trigger", lambda d, r: d.client.trigger(r.path_params["series_id"]), "series_id"),
        ["POST"],
    ),
    ("/api/tasks/bulk", api_bulk, ["POST"]),
]
