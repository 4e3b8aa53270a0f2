"""The Redis calls an operation of the client makes, as values: one logic, two drivers.

Every operation of :class:`~perseid_jobs.api.client.Client` (and so of the command line)
and of :class:`~perseid_jobs.api.aio.AsyncClient` is written once, as a generator (an
:data:`Op`) that yields the calls below and is sent their replies: the keys, the script
arguments, the validation, the partition routing, the merging of partitions and the
reading of replies live there and nowhere else. The sync client drives an Op with
:func:`run_sync` on a ``redis.Redis``; the async client drives the same Op on a
``redis.asyncio.Redis`` (see ``aio.py``). So the two clients cannot drift: neither has
any logic of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

import redis

from ..store.keys import Keys
from ..store.partitions import default_count
from ..store.scripts import Scripts

T = TypeVar("T")


class Cmd(NamedTuple):
    """One Redis command by its redis-py method name; the reply is redis-py's."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012  # never mutated: a NamedTuple default


class Batch(NamedTuple):
    """Commands in one non-transactional pipeline (one round trip); the replies, in order."""

    cmds: list[Cmd]


class Eval(NamedTuple):
    """A Lua script of one partition (EVALSHA, loaded again on NOSCRIPT); its raw reply."""

    keys: Keys
    name: str
    argv: list[str | int]


class EvalWait(NamedTuple):
    """A script, then ``WAIT 1`` on the same connection: (raw reply, replicas that have it).

    On a Cluster both go to the primary that owns the partition, on one connection of that
    node (``WAIT`` counts the replicas of that connection's writes)."""

    keys: Keys
    name: str
    argv: list[str | int]
    timeout_ms: int


class Topology(NamedTuple):
    """The default partition count for this Redis (no round trip: the client knows it)."""


Call = Cmd | Batch | Eval | EvalWait | Topology

Op = Generator[Call, Any, T]
"""An operation: yields calls, is sent each one's reply, returns its result."""


def cmd(name: str, *args: Any, **kwargs: Any) -> Cmd:
    """``Cmd`` with the arguments as redis-py takes them: ``yield cmd("hget", key, field)``."""
    return Cmd(name, args, kwargs)


def queue(pipe: Any, c: Cmd) -> None:
    """Add a command to a pipeline (sync or async: both queue without a round trip)."""
    getattr(pipe, c.name)(*c.args, **c.kwargs)


def run_sync(client: Any, scripts_in: Callable[[Keys], Scripts], op: Op[T]) -> T:
    """Drive ``op`` on a ``redis.Redis`` (or ``RedisCluster``): each call, then its reply."""
    reply: Any = None
    while True:
        try:
            call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply = _answer(client, scripts_in, call)


def _answer(client: Any, scripts_in: Callable[[Keys], Scripts], call: Call) -> Any:
    if isinstance(call, Cmd):
        return getattr(client, call.name)(*call.args, **call.kwargs)
    if isinstance(call, Eval):
        return scripts_in(call.keys).call(call.name, *call.argv)
    if isinstance(call, Batch):
        if not call.cmds:
            return []
        pipe = client.pipeline(transaction=False)
        for c in call.cmds:
            queue(pipe, c)
        return pipe.execute()
    if isinstance(call, EvalWait):
        scripts = scripts_in(call.keys)
        if isinstance(client, redis.RedisCluster):
            node = client.get_node_from_key(call.keys.prefix)  # type: ignore[no-untyped-call]
            scripts = Scripts(node.redis_connection, call.keys)
        return scripts.call_then_wait(call.name, call.argv, call.timeout_ms)
    return default_count(client)
