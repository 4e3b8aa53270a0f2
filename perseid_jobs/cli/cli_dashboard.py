"""``perseid-jobs dashboard``: the web dashboard (see docs/dashboard.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..api.client import Client
from ..core.errors import DashboardUnprotected, InvalidArgs
from ..store.connection import DEFAULT_REDIS_URL, redacted
from ..store.keys import DEFAULT_NAMESPACE
from .cli_common import (
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    app,
    errors_as_lines,
    make_client,
)


@app.command()
@errors_as_lines
def dashboard(
    host: Annotated[
        str, typer.Option(metavar="ADDR", help="Address to listen on (default: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port to listen on.")] = 8585,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Hide the actions and refuse them (403).")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PERSEID_DASHBOARD_TOKEN",
            metavar="TOKEN",
            help="Every page and API call needs it (Bearer header or the login form).",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Allow a non-loopback --host without a token.")
    ] = False,
    logs_dir: Annotated[
        Path | None,
        typer.Option(
            "--logs-dir",
            metavar="DIR",
            help="A worker's spool on this host: running tasks' logs are tailed from it.",
        ),
    ] = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Serve the web dashboard: tasks, series, workers, jobs, live, with actions and audit."""
    from ..dashboard.auth import is_loopback

    if not 0 < port < 65536:
        raise InvalidArgs(f"--port {port}: give a port from 1 to 65535")
    token = token or None
    if not is_loopback(host) and token is None and not no_auth:
        raise DashboardUnprotected(host)
    client = make_client(redis_url, namespace, partitions=partitions)
    client.redis.ping()
    serve(client, redis_url, host, port, token, read_only, logs_dir)


def serve(
    client: Client,
    redis_url: str,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    logs_dir: Path | None,
) -> None:
    """Run uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from ..dashboard.app import create_app
    from ..dashboard.auth import loopback_hosts

    web = create_app(
        client,
        redis_url,
        token=token,
        read_only=read_only,
        allowed_hosts=loopback_hosts(host, port),
        logs_dir=logs_dir,
    )
    mode = "read-only" if read_only else "actions on"
    auth = "token required" if token else "no token"
    typer.echo(
        f"dashboard on http://{host}:{port}/ ({mode}, {auth}) for {redacted(redis_url)}"
        f" namespace {client.namespace}",
        err=True,
    )
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
