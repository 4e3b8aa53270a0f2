"""Connecting to Redis: one place that turns a URL into a client, and the retry policy.

URL forms (ACL users and passwords go in the URL as ``user:password@``):

- ``redis://host:port/db``, ``rediss://…`` (TLS; ``?ssl_ca_certs=PATH``,
  ``?ssl_cert_reqs=none``), ``unix:///path.sock``;
- ``redis+sentinel://host:port[,host:port…]/master-name[/db]`` (``rediss+sentinel://``
  for TLS to the sentinels and the primary; ``?sentinel_username=…&sentinel_password=…``
  when the sentinels have their own credentials): the client asks the sentinels for
  the primary and asks again after a failover;
- ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://``): Redis Cluster.
  A ``redis://`` URL that points at a cluster node is detected and works the same.

Every key of a namespace shares one hash tag, so on a cluster each script runs on
the one node that owns that slot.

Connection errors become :class:`~perseid_jobs.core.errors.RedisUnavailable` naming the
URL. :data:`TRANSIENT_ERRORS` and :class:`Backoff` are the retry policy of the
worker's paths: what is worth retrying, and how long to wait before the next try.
"""

from __future__ import annotations

import random
import time
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    NoPermissionError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from ..core.errors import ConfigError, RedisUnavailable
from ..worker.settings import DEFAULT_REDIS_URL as DEFAULT_REDIS_URL  # the table's (re-exported)

#: Errors after which the same call may succeed later: Redis restarting or loading its
#: data, a failover in progress, a network cut. Retried with :class:`Backoff`.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    ClusterError,
    TryAgainError,
    redis.ReadOnlyError,  # a demoted primary still answering; the next call finds the new one
    RedisClusterException,  # e.g. a slot not covered while the cluster fails over
)

#: Everything a Redis call may raise: the worker's loop backs off on any of them.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)

_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SENTINEL_ONLY = ("sentinel_username", "sentinel_password")


def redacted(url: str) -> str:
    """The URL with any password (also ``sentinel_password=``) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if "sentinel_password=" in parts.query:
        query = "&".join(
            f"{k}=***" if k == "sentinel_password" else f"{k}={v}"
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
        parts = parts._replace(query=query)
    return urlunsplit(parts)


class Backoff:
    """Exponential backoff with full jitter, for retrying a call until Redis answers."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.retry_at = 0.0
        self.down_since: float | None = None

    def ready(self, now: float | None = None) -> bool:
        """True when the next try is allowed."""
        return (time.monotonic() if now is None else now) >= self.retry_at

    def failed(self) -> float:
        """Count one failure; returns the delay before the next try."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 16))
        delay = random.uniform(ceiling / 2, ceiling)
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> float | None:
        """Reset; returns how long Redis was unreachable, if it was."""
        down = self.down_since
        self.failures, self.retry_at, self.down_since = 0, 0.0, None
        return None if down is None else time.monotonic() - down


def _options(socket_timeout: float | None, retries: int) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0 if socket_timeout is None else min(5.0, socket_timeout),
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": 30,
    }


def _hosts(netloc: str, default_port: int) -> tuple[str, str, list[tuple[str, int]]]:
    """``user:pass@h1:p1,h2:p2`` -> (user, password, [(host, port), ...])."""
    auth, _, hostlist = netloc.rpartition("@")
    user, _, password = auth.partition(":")
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, str(default_port)
        hosts.append((host.strip("[]"), int(port)))
    return unquote(user), unquote(password), hosts


def _query(query: str) -> dict[str, Any]:
    """URL query options typed as redis-py types them."""
    if not query:
        return {}
    parsed: dict[str, Any] = redis.connection.parse_url(f"redis://localhost?{query}")  # type: ignore[no-untyped-call]
    parsed.pop("host", None)
    return parsed


def sentinel_parts(
    url: str, options: dict[str, Any], retry: Any
) -> tuple[list[tuple[str, int]], dict[str, Any], str, dict[str, Any]]:
    """A ``redis+sentinel://`` URL's parts, for the sync and the asyncio Sentinel alike: the
    sentinels, their options (``retry``: that client's Retry), the primary's name and the
    primary's connection options."""
    parts = urlsplit(url)
    user, password, hosts = _hosts(parts.netloc, 26379)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("name the primary: redis+sentinel://host:port/master-name")
    query = _query(parts.query)
    sentinel_auth = {k[len("sentinel_") :]: query.pop(k) for k in _SENTINEL_ONLY if k in query}
    db = int(path[1]) if len(path) > 1 else int(query.pop("db", 0))
    tls = {"ssl": True} if parts.scheme.startswith("rediss") else {}
    tls_opts = {k: v for k, v in query.items() if k.startswith("ssl_")}
    sentinel_opts = {
        "socket_timeout": options["socket_connect_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": retry,
        "decode_responses": True,
        **tls,
        **tls_opts,
        **sentinel_auth,
    }
    auth = {"username": user or None, "password": password or None}
    return hosts, sentinel_opts, unquote(path[0]), {"db": db, **options, **auth, **tls, **query}


def cluster_parts(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """A ``redis+cluster://`` URL's nodes and their options (auth, TLS, the query's)."""
    parts = urlsplit(url)
    user, password, hosts = _hosts(parts.netloc, 6379)
    query = _query(parts.query)
    query.pop("db", None)
    tls = {"ssl": True} if parts.scheme.startswith("rediss") else {}
    return hosts, {"username": user or None, "password": password or None, **tls, **query}


def _sentinel(url: str, options: dict[str, Any]) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)  # redis-py's default: 10
    hosts, sentinel_opts, name, primary = sentinel_parts(url, options, retry)
    manager = Sentinel(hosts, sentinel_kwargs=sentinel_opts)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, manager.master_for(name, **primary))  # type: ignore[no-untyped-call]


def _cluster(url: str, options: dict[str, Any]) -> redis.Redis:
    hosts, kw = cluster_parts(url)
    nodes = [ClusterNode(h, p) for h, p in hosts]  # type: ignore[no-untyped-call]
    return _cluster_client(nodes, options, **kw)


def _cluster_client(nodes: list[ClusterNode], options: dict[str, Any], **kw: Any) -> redis.Redis:
    skip = ("retry_on_error", "health_check_interval")
    opts = {k: v for k, v in options.items() if k not in skip}
    # The commands perseid sends (scripts, hashes, zsets, streams, TIME) behave the same
    # on a RedisCluster; every key carries the namespace hash tag, so one node answers.
    return cast(redis.Redis, RedisCluster(startup_nodes=nodes, **opts, **kw))


def _is_cluster_node(client: redis.Redis) -> bool:
    # CLUSTER MYID answers on a cluster node only; unlike INFO it is not a "dangerous"
    # command for ACLs, and unlike HELLO it cannot change the connection's protocol.
    try:
        client.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
    except redis.ResponseError:  # cluster support disabled, unknown command, or no permission
        return False
    return True


def _as_cluster(client: redis.Redis, options: dict[str, Any]) -> redis.Redis:
    kw = dict(client.connection_pool.connection_kwargs)
    node = ClusterNode(kw["host"], kw["port"])  # type: ignore[no-untyped-call]
    extra = {k: kw[k] for k in ("username", "password") if kw.get(k)}
    if client.connection_pool.connection_class is redis.SSLConnection:
        extra["ssl"] = True
        extra.update({k: v for k, v in kw.items() if k.startswith("ssl_")})
    client.close()
    return _cluster_client([node], options, **extra)


def _why(exc: Exception) -> str:
    """A short, one-line account of a connection failure."""
    if isinstance(exc, MasterNotFoundError):
        return "no sentinel named a reachable primary (check the sentinels and the master name)"
    if isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc):
        return "no cluster node answered"
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"


def connect(
    url: str,
    *,
    socket_timeout: float | None = 10.0,
    retries: int = 3,
    check: bool = True,
) -> redis.Redis:
    """A client for ``url`` (decoded string replies); pings it first if ``check``.

    ``retries`` is how often redis-py itself repeats a command after a connection error.
    The worker passes 0 and retries on its own, so that it knows when a script's reply
    was lost (the script may have run) and reconciles.
    """
    options = _options(socket_timeout, retries)
    scheme = urlsplit(url).scheme
    try:
        if scheme in _SENTINEL_SCHEMES:
            client = _sentinel(url, options)
        elif scheme in _CLUSTER_SCHEMES:
            client = _cluster(url, options)
        else:
            client = redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: {exc} (use redis://host:port/db,"
            " redis+sentinel://host:port/master or redis+cluster://host:port)"
        ) from None
    except REDIS_ERRORS as exc:  # a cluster client reads the topology when created
        raise RedisUnavailable(
            f"cannot reach Redis at {redacted(url)}: {_why(exc)}; check --redis / PERSEID_REDIS_URL"
        ) from None
    if not check:
        return client
    try:
        client.ping()
        if scheme in ("redis", "rediss") and _is_cluster_node(client):
            client = _as_cluster(client, options)
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {redacted(url)} refused the credentials: {_why(exc)}"
        ) from None
    except NoPermissionError as exc:
        raise RedisUnavailable(f"Redis at {redacted(url)} denied a command: {_why(exc)}") from None
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redacted(url)}: {_why(exc)}; check --redis / PERSEID_REDIS_URL"
        ) from None
    return client
