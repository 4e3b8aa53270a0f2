"""How each script's source is put together: generated prelude, the includes it names, itself.

A helper a script calls but does not include would only fail when that path
runs (a nil global), so the check here is static: every helper name a script's
source uses is defined in that source.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from perseid_jobs.core.errors import Code
from perseid_jobs.store import lua_source
from perseid_jobs.store.lua_source import (
    INCLUDES_DIR,
    LUA_DIR,
    SCRIPT_NAMES,
    IncludeError,
    resolve,
    script_source,
)
from perseid_jobs.store.redisproc import RedisServer

_DEFINED_RE = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)


def code_of(source: str) -> str:
    """The source without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in source.splitlines())


def helper_names() -> set[str]:
    """Every name an include defines at its top level (functions and constants)."""
    names: set[str] = set()
    for path in INCLUDES_DIR.glob("*.lua"):
        names |= set(_DEFINED_RE.findall(path.read_text()))
    return names


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_a_script_defines_every_helper_it_uses_once(name: str) -> None:
    source = script_source(name)
    defined = _DEFINED_RE.findall(source)
    used = set(re.findall(r"\b\w+\b", code_of(source))) & helper_names()
    assert used - set(defined) == set(), f"{name}.lua uses these without including them"
    assert len(defined) == len(set(defined)), "a name defined twice: an include sent twice"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_the_reply_codes_come_from_errors_code(name: str) -> None:
    source = script_source(name)
    for code in Code:
        lua_name = "OK" if code is Code.OK else f"E_{code.name}"
        assert f"\nlocal {lua_name} = {int(code)}\n" in source
    # ... and only from there: no Lua file spells one.
    own = (LUA_DIR / f"{name}.lua").read_text()
    included = "".join(p.read_text() for p in INCLUDES_DIR.glob("*.lua"))
    assert not re.search(r"^local (OK|E_\w+) =", own + included, re.MULTILINE)


def test_a_script_carries_only_the_includes_it_needs() -> None:
    drain, claim, finish = (script_source(n) for n in ("drain", "claim", "finish"))
    assert "-- includes/" not in drain
    assert "local function claim_due" in claim and "local function close_task" not in claim
    assert len(drain) < len(claim) < len(finish)


def test_includes_resolve_transitively_once_each_before_their_users() -> None:
    order = resolve(["fail_running", "close_task"])
    assert len(order) == len(set(order))
    for user, used in [("close_task", "release_slots"), ("retry_task", "index_task"),
                       ("index_task", "wake_sleepers"), ("fail_running", "continue_series"),
                       ("continue_series", "follow_run")]:  # fmt: skip
        assert order.index(used) < order.index(user)
    assert order[-1] == "fail_running"


def test_a_missing_include_or_a_cycle_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.lua").write_text("-- include: b\n")
    (tmp_path / "b.lua").write_text("-- include: a\n")
    (tmp_path / "c.lua").write_text("-- include: gone\n")
    monkeypatch.setattr(lua_source, "INCLUDES_DIR", tmp_path)
    with pytest.raises(IncludeError, match="include cycle: a -> b -> a"):
        resolve(["a"])
    with pytest.raises(IncludeError, match="no include 'gone'"):
        resolve(["c"])


def test_every_script_compiles_on_redis(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    try:
        for name in SCRIPT_NAMES:
            r.script_load(script_source(name))  # a Lua syntax error raises here
    finally:
        r.close()
