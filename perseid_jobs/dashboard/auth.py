"""Who may use the dashboard: the token, the login cookie, CSRF and the Origin/Host checks.

With a token, every page and API call needs it, as ``Authorization: Bearer <token>``
or as the cookie the login form sets (HttpOnly, SameSite=Strict; its value is an HMAC
of the token, never the token itself). Every POST also needs a CSRF token (the
``X-CSRF-Token`` header or a ``csrf_token`` form field) that matches the browser's
``perseid_csrf`` cookie, and an Origin (or Referer) of this very host. A call that
carries the Bearer token is exempt from CSRF: a browser never adds that header on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

SESSION_COOKIE = "perseid_session"
CSRF_COOKIE = "perseid_csrf"
NAME_COOKIE = "perseid_name"
PUBLIC = ("/login", "/static/", "/healthz")


@dataclass
class AuthConfig:
    """The dashboard's security settings."""

    token: str | None
    read_only: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def session_value(self) -> str:
        """The login cookie's value: an HMAC of the token (the token never leaves the form)."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"perseid-session", hashlib.sha256).hexdigest()

    def csrf_for(self, cookie: str) -> str:
        """The CSRF token that goes with a browser's ``perseid_csrf`` cookie."""
        return hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()


def bearer_ok(config: AuthConfig, request: Request) -> bool:
    """Whether the request carries the token as ``Authorization: Bearer``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return (
        config.token is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), config.token.encode())
    )


def authenticated(config: AuthConfig, request: Request) -> bool:
    """No token set, the Bearer token, or the login cookie."""
    if config.token is None or bearer_ok(config, request):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), config.session_value().encode())


def same_origin(request: Request) -> bool:
    """Whether the request's Origin (else Referer) names the host it was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


def csrf_ok(config: AuthConfig, request: Request, form: dict[str, Any] | None = None) -> bool:
    """Whether a POST carries the CSRF token of its browser's cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get("x-csrf-token") or str((form or {}).get("csrf_token", ""))
    return bool(cookie) and hmac.compare_digest(sent.encode(), config.csrf_for(cookie).encode())


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the only kind the dashboard's forms send; parsed here
    rather than by python-multipart, a dependency for one login form)."""
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    body = await request.body()
    if len(body) > 64 * 1024:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


class AuthMiddleware(BaseHTTPMiddleware):
    """Refuses what the token does not allow; gives each browser its CSRF cookie."""

    def __init__(self, app: Any, config: AuthConfig, allowed_hosts: set[str] | None) -> None:
        super().__init__(app)
        self.config = config
        self.allowed_hosts = allowed_hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = request.headers.get("host", "")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            # A loopback dashboard answers only to its own names: a page of another site
            # that points a DNS name at 127.0.0.1 (DNS rebinding) gets nothing.
            return JSONResponse({"error": f"host {host!r} is not this dashboard's"}, 421)
        path = request.url.path
        public = any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)
        if not public and not authenticated(self.config, request):
            if path.startswith("/api/"):
                return JSONResponse(
                    {"error": "a token is needed: send Authorization: Bearer <token>"},
                    401,
                    headers={"WWW-Authenticate": 'Bearer realm="perseid-jobs"'},
                )
            return RedirectResponse(f"/login?next={request.url.path}", 303)
        post = request.method == "POST" and path != "/login"
        if post and not bearer_ok(self.config, request) and not same_origin(request):
            return JSONResponse({"error": "cross-origin POST refused (Origin/Host)"}, 403)
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie:
            cookie = secrets.token_urlsafe(24)
        request.state.csrf_cookie = cookie
        request.state.csrf_token = self.config.csrf_for(cookie)
        began = time.perf_counter()
        response = await call_next(request)
        # How long the page took to read and render here (the benchmark reads it).
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response


def loopback_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a loopback dashboard answers to (None: any, for a public bind)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
