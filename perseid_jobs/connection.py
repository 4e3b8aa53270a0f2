"""Connecting to Redis: one place that turns a URL into a client.

Supports ``redis://``, ``rediss://`` (TLS), ``unix://`` and ACL users in the
URL (``redis://user:password@host:port/db``). Connection errors become
:class:`~perseid_jobs.errors.RedisUnavailable` naming the URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ConfigError, RedisUnavailable

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(
    url: str,
    *,
    socket_timeout: float | None = 10.0,
    retries: int = 3,
    check: bool = True,
) -> redis.Redis:
    """A client for ``url`` (decoded string replies); pings it first if ``check``."""
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: {exc} (use redis://host:port/db)"
        ) from None
    if check:
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(
                f"cannot reach Redis at {redacted(url)}: {exc}; check --redis / PERSEID_REDIS_URL"
            ) from None
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(
                f"Redis at {redacted(url)} refused the credentials: {exc}"
            ) from None
    return client
