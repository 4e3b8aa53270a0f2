"""The Lua source sent to Redis for each script: generated prelude, its includes, the script.

A script names the helpers it needs in ``-- include: a, b`` lines; each name is a
file of ``lua/includes/``, which may include others in turn. They are pulled in
once each, every include before the ones that use it (Lua's ``local function``
is visible only below its definition), so a script carries what it calls and
nothing else (BullMQ's ``includes/`` pattern). Before them comes the prelude
generated from Python: the key functions (:func:`perseid_jobs.store.keys.lua_prelude`)
and the reply codes of :class:`perseid_jobs.core.errors.Code`, so both stay defined
in one place.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from ..core.errors import Code
from .keys import lua_prelude

LUA_DIR = Path(__file__).resolve().parent / "lua"
INCLUDES_DIR = LUA_DIR / "includes"

SCRIPT_NAMES = (
    "schedule",
    "claim",
    "finish",
    "look",
    "deliver",
    "outbox_ack",
    "heartbeat",
    "register",
    "deregister",
    "drain",
    "cancel",
    "reap",
    "set_log_url",
    "republish",
    "served",
    "pause",
    "trigger",
    "retry",
    "bulk",
)

_INCLUDE_RE = re.compile(r"^-- include:(.*)$", re.MULTILINE)


class IncludeError(RuntimeError):
    """A script's includes cannot be resolved (a missing file, or a cycle)."""


def lua_codes() -> str:
    """``local OK = 0`` and ``local E_<NAME> = <code>`` for every :class:`Code`."""
    lines = [f"local {'OK' if c is Code.OK else 'E_' + c.name} = {int(c)}" for c in Code]
    return "\n".join(lines) + "\n"


def includes_of(source: str) -> list[str]:
    """The include names a source lists, in order."""
    return [n.strip() for line in _INCLUDE_RE.findall(source) for n in line.split(",") if n.strip()]


def resolve(names: list[str], read: dict[str, str] | None = None) -> list[str]:
    """Every include ``names`` need, transitively, each after the includes it uses."""
    read = {} if read is None else read
    order: list[str] = []
    active: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in active:
            raise IncludeError(f"include cycle: {' -> '.join([*active, name])}")
        path = INCLUDES_DIR / f"{name}.lua"
        if not path.is_file():
            raise IncludeError(f"no include {name!r}: {path} does not exist")
        read[name] = path.read_text()
        active.append(name)
        for dep in includes_of(read[name]):
            visit(dep)
        active.pop()
        order.append(name)

    for name in names:
        visit(name)
    return order


@cache
def script_source(name: str) -> str:
    """The full Lua source sent to Redis for script ``name``."""
    body = (LUA_DIR / f"{name}.lua").read_text()
    texts: dict[str, str] = {}
    parts = [lua_prelude(), lua_codes()]
    for inc in resolve(includes_of(body), texts):
        parts.append(f"-- includes/{inc}.lua\n{texts[inc]}")
    parts.append(f"-- {name}.lua\n{body}")
    return "\n".join(parts)
