"""One script over every partition, in one round trip per Redis node.

An instance's heartbeat and reap go to every partition. Sent one by one that is P round
trips; here the calls are grouped by the node that owns each partition (one group on a
single Redis) and each group goes in one pipeline on that node's own connection. A
pipeline that fails (a partition moved during a reshard: MOVED; a node that just took
over) is sent again call by call through the client, which follows the Cluster's
redirections: so only idempotent scripts go through here (heartbeat, reap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from ..store.scripts import Scripts


def _by_node(client: Any, each: Sequence[Scripts]) -> list[tuple[Any, list[int]]]:
    if not isinstance(client, RedisCluster):
        return [(client, list(range(len(each))))]
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, scripts in enumerate(each):
        node = client.get_node_from_key(scripts.keys.prefix)  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, (node.redis_connection, []))[1].append(i)
    return list(groups.values())


def call_each(
    client: Any, each: Sequence[Scripts], name: str, argvs: Sequence[Sequence[Any]]
) -> list[Any]:
    """The raw replies of script ``name`` in every partition (``argvs[i]`` for the i-th)."""
    out: list[Any] = [None] * len(each)
    for conn, indexes in _by_node(client, each):
        try:
            pipe = conn.pipeline(transaction=False)
            for i in indexes:
                each[i].call(name, *argvs[i], client=pipe)
            for i, reply in zip(indexes, pipe.execute(), strict=True):
                out[i] = reply
        except redis.RedisError:
            for i in indexes:
                out[i] = each[i].call(name, *argvs[i])
    return out
