"""The dashboard's Starlette application: its settings, templates and routes.

Route handlers are plain functions (Starlette runs them in its thread pool) over the
same synchronous :class:`~perseid_jobs.api.client.Client` the command line uses; only
the server-sent events are async, fed by the one events reader (:mod:`.live`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..api.client import Client
from ..core.timefmt import format_time
from ..store.connection import redacted
from .auth import AuthConfig, AuthMiddleware
from .live import EventHub

HERE = Path(__file__).parent

# Everything a page shows of a task is the user's text: every {{ }} is escaped, and the
# Content-Security-Policy allows no inline script, as a second line behind the escaping.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass
class Dashboard:
    """What every handler needs: the client, the settings, the events hub, the templates."""

    client: Client
    redis_url: str
    auth: AuthConfig
    hub: EventHub
    env: jinja2.Environment
    logs_dir: Path | None = None

    @property
    def redis_shown(self) -> str:
        """The Redis URL as pages show it: password masked."""
        return redacted(self.redis_url)

    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """Render a template with what every page shows."""
        html = self.env.get_template(template).render(
            request=request,
            path=request.url.path,
            csrf_token=getattr(request.state, "csrf_token", ""),
            read_only=self.auth.read_only,
            auth_on=self.auth.token is not None,
            redis_url=self.redis_shown,
            namespace=self.client.namespace,
            **ctx,
        )
        return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP})


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def make_env() -> jinja2.Environment:
    """Jinja with autoescape on for every template (all are HTML)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["t"] = lambda v: format_time(v) if v is not None else "-"
    env.filters["json"] = _json_text
    env.filters["dash"] = lambda v: "-" if v is None or v == "" else v
    return env


def create_app(
    client: Client,
    redis_url: str,
    *,
    token: str | None = None,
    read_only: bool = False,
    allowed_hosts: set[str] | None = None,
    logs_dir: Path | None = None,
) -> Starlette:
    """The dashboard for ``client``'s namespace."""
    from . import api, pages

    streams = [keys.events for keys in client.partitions()]
    dash = Dashboard(
        client=client,
        redis_url=redis_url,
        auth=AuthConfig(token=token, read_only=read_only),
        hub=EventHub(redis_url, streams),
        env=make_env(),
        logs_dir=logs_dir,
    )
    routes: list[Route | Mount] = [
        *[Route(p, functools.partial(h, dash), methods=m) for p, h, m in pages.ROUTES],
        *[Route(p, functools.partial(h, dash), methods=m) for p, h, m in api.ROUTES],
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        dash.hub.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(AuthMiddleware, config=dash.auth, allowed_hosts=allowed_hosts)
    app.state.dashboard = dash
    return app
