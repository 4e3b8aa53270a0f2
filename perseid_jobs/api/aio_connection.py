"""Connecting with ``redis.asyncio``: the URL forms of :mod:`perseid_jobs.store.connection`.

The same URLs (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
``redis+cluster://``, and a ``redis://`` URL that points at a cluster node), parsed by
the same helpers, the same options (decoded replies, timeouts, redis-py's retries) and
the same one-line errors (:class:`~perseid_jobs.core.errors.RedisUnavailable` naming the
URL), but an asyncio client: ``redis.asyncio.Redis``, a Sentinel-managed one, or
``redis.asyncio.RedisCluster``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoPermissionError

from ..core.errors import ConfigError, RedisUnavailable
from ..store.connection import (
    _CLUSTER_SCHEMES,
    _SENTINEL_SCHEMES,
    REDIS_ERRORS,
    _options,
    _why,
    cluster_parts,
    redacted,
    sentinel_parts,
)


def _async_options(socket_timeout: float | None, retries: int) -> dict[str, Any]:
    options = _options(socket_timeout, retries)
    # The sync options' Retry sleeps with time.sleep; redis.asyncio needs its own.
    options["retry"] = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    return options


def _sentinel(url: str, options: dict[str, Any]) -> Any:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)  # as the sync one's sentinels
    hosts, sentinel_opts, name, primary = sentinel_parts(url, options, retry)
    manager: Any = Sentinel(hosts, sentinel_kwargs=sentinel_opts)  # type: ignore[no-untyped-call]
    return manager.master_for(name, **primary)


def _cluster_client(nodes: list[ClusterNode], options: dict[str, Any], **kw: Any) -> Any:
    skip = ("retry_on_error", "health_check_interval")
    opts = {k: v for k, v in options.items() if k not in skip}
    return aioredis.RedisCluster(startup_nodes=nodes, **opts, **kw)


def _cluster(url: str, options: dict[str, Any]) -> Any:
    hosts, kw = cluster_parts(url)
    return _cluster_client([ClusterNode(h, p) for h, p in hosts], options, **kw)


async def _is_cluster_node(client: Any) -> bool:
    # As the sync connect: CLUSTER MYID answers on a cluster node only.
    try:
        await client.execute_command("CLUSTER", "MYID")
    except redis.ResponseError:
        return False
    return True


async def _as_cluster(client: Any, options: dict[str, Any]) -> Any:
    kw = dict(client.connection_pool.connection_kwargs)
    node = ClusterNode(kw["host"], kw["port"])
    extra = {k: kw[k] for k in ("username", "password") if kw.get(k)}
    if client.connection_pool.connection_class is aioredis.SSLConnection:
        extra["ssl"] = True
        extra.update({k: v for k, v in kw.items() if k.startswith("ssl_")})
    await client.aclose()
    return _cluster_client([node], options, **extra)


def _client_for(url: str, options: dict[str, Any]) -> Any:
    scheme = urlsplit(url).scheme
    try:
        if scheme in _SENTINEL_SCHEMES:
            return _sentinel(url, options)
        if scheme in _CLUSTER_SCHEMES:
            return _cluster(url, options)
        return aioredis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: {exc} (use redis://host:port/db,"
            " redis+sentinel://host:port/master or redis+cluster://host:port)"
        ) from None


async def connect_async(url: str, *, socket_timeout: float | None = 10.0, retries: int = 3) -> Any:
    """An asyncio client for ``url`` (decoded string replies), pinged (and, for a cluster,
    its topology read) before it is returned; raises RedisUnavailable if it does not answer."""
    options = _async_options(socket_timeout, retries)
    client = _client_for(url, options)
    try:
        return await _checked(client, url, options)
    except BaseException:
        await close_async(client)  # no connection left open behind the error
        raise


async def close_async(client: Any) -> None:
    """Close an asyncio client of :func:`connect_async`, with the sentinels it asked."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in manager.sentinels if manager is not None else []:
        await sentinel.aclose()


async def _checked(client: Any, url: str, options: dict[str, Any]) -> Any:
    """``client`` once it answered (a cluster node's URL: a cluster client instead)."""
    try:
        if isinstance(client, aioredis.RedisCluster):
            await client.initialize()  # the topology: the default partition count needs it
        await client.ping()
        if urlsplit(url).scheme in ("redis", "rediss") and await _is_cluster_node(client):
            client = await _as_cluster(client, options)
            await client.initialize()
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
