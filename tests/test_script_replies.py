"""The reply Structs of perseid_jobs.store.script_io against what the scripts really return.

msgspec decodes an array-like Struct by position and ignores trailing extra
elements, so a script that returns one more (or, with a default, one fewer)
value than its Struct names would go unnoticed. Two checks: every raw reply of
a run through every script and every reply shape has exactly the length of the
Struct it decoded into (nested ones too); and each script's header documents
replies of those lengths.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.errors import KeyConflict, ParentNotFound, TaskAlreadyEnded, TaskNotFound
from perseid_jobs.core.models import JobDefinition
from perseid_jobs.store import script_io as io
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.scripts import LUA_DIR, SCRIPT_NAMES, Scripts
from perseid_jobs.worker.outcome import Outcome, given_next_starts

from .conftest import JOBS


class RecordingScripts(Scripts):
    """The real scripts, keeping each raw reply next to what the typed method made of it."""

    def __init__(self, client: redis.Redis, keys: Any) -> None:
        super().__init__(client, keys)
        self.raw: list[tuple[str, Any]] = []

    def call(self, name: str, *args: Any, client: Any = None) -> Any:
        reply = super().call(name, *args, client=client)
        if client is None:
            self.raw.append((name, reply))
        return reply


def struct_length(t: type[msgspec.Struct]) -> int:
    """Elements of the array a Struct decodes from: its fields, plus its tag (the code)."""
    return len(t.__struct_fields__) + (t.__struct_config__.tag is not None)


def check_lengths(raw: Any, decoded: msgspec.Struct, seen: set[type]) -> None:
    """``raw`` has exactly the elements ``decoded``'s Struct names, all the way down."""
    t = type(decoded)
    seen.add(t)
    assert isinstance(raw, list) and len(raw) == struct_length(t), (t.__name__, raw)
    offset = int(t.__struct_config__.tag is not None)
    for i, name in enumerate(t.__struct_fields__):
        value = getattr(decoded, name)
        if isinstance(value, msgspec.Struct):
            check_lengths(raw[offset + i], value, seen)
        elif isinstance(value, list):
            for raw_item, item in zip(raw[offset + i], value, strict=True):
                if isinstance(item, msgspec.Struct):
                    check_lengths(raw_item, item, seen)


# Well formed (its partition is 0), so the client sends it to the script, which finds nothing.
NO_SUCH_ID = "0" * 26


@pytest.fixture
def c(redis_server: RedisServer, namespace: str) -> Iterator[Client]:
    client = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS)
    # The recording scripts stand in for the (only) partition's, so every call is seen.
    client._scripts_by_tag[client.keys.tag] = RecordingScripts(client.redis, client.keys)
    yield client
    client.close()


def register(c: Client, inst: str) -> None:
    d = c.job_definition("hello")
    short = JobDefinition(slots=1, max_duration_ms=d.max_duration_ms)
    jobs = {"hello": msgspec.json.encode(short).decode()}
    c.scripts.register(inst, ttl_ms=60_000, slots=4, host="h", pid=1, version="t", jobs=jobs)


def every_reply_shape(c: Client) -> None:
    """Call every script so that each returns each of its reply shapes at least once."""
    s = c.scripts
    register(c, "i1")
    one = c.schedule("hello", key="k", args={"n": 1})
    with pytest.raises(KeyConflict):
        c.schedule("hello", key="k", args={"n": 2})
    with pytest.raises(ParentNotFound):
        c.schedule("hello", after=NO_SUCH_ID)
    series = c.schedule("hello", every="1h")
    assert isinstance(s.look("i1"), io.Looked)
    claimed = s.claim("i1", 1)
    assert isinstance(claimed, io.Claimed) and [t.id for t in claimed.tasks] == [one.id]
    c.cancel(one.id)  # running: flagged, so the heartbeat names it
    assert isinstance(s.heartbeat("i1", 60_000), io.Renewed)
    done = Outcome(one.id, "1", TaskStatus.CANCELLED, "0", "")
    assert isinstance(s.finish("i1", [done], claim_most=5).claim, io.Claimed)  # takes the run
    with pytest.raises(TaskAlreadyEnded):
        c.cancel(one.id)
    with pytest.raises(TaskNotFound):
        c.cancel(NO_SUCH_ID)
    s.republish("i1", {})
    s.set_log_url([(one.id, "file:///log")])
    s.drain("i1")
    c.redis.zadd(c.keys.instances, {"i1": 0})  # its lease lapses
    assert s.claim("i1", 1) == s.heartbeat("i1", 1) == s.republish("i1", {}) == io.LeaseLapsed()
    assert s.look("i1") == io.LeaseLapsed()
    assert isinstance(s.finish("i1", [], claim_most=1).claim, io.LeaseLapsed)
    reaped = s.reap()
    assert [n.task_id for n in reaped.needs] == [series.id]
    s.reap(given_next_starts(reaped.needs, reaped.now))
    register(c, "i2")
    c.schedule("hello", every="1h")  # a run due now, for i2 to hold when it leaves
    nxt = s.claim("i2", 1)
    assert isinstance(nxt, io.Claimed) and nxt.tasks
    left = s.deregister("i2", "worker shutdown")
    assert left.needs
    s.deregister("i2", "worker shutdown", given_next_starts(left.needs, c.now_ms()))
    assert series.series is not None
    s.cancel_series(series.series, reason="done")
    assert isinstance(s.cancel_series(series.series, reason="again"), io.AlreadyEnded)
    s.served("hello")
    s.deliver([("settle", one.id, "no-parent", "completed")])  # no longer blocked: a no-op
    s.outbox_ack(["no-such-delivery"])
    assert isinstance(s.pause("series", NO_SUCH_ID, pause=True), io.NotFound)
    assert isinstance(s.pause("group", "g", pause=True), io.Paused)
    assert isinstance(s.pause("group", "g", pause=False), io.Paused)
    live = c.schedule("hello", every="1h")
    assert live.series is not None and isinstance(s.trigger(live.series), io.Triggered)
    assert isinstance(s.trigger(series.series), io.AlreadyEnded)
    assert isinstance(s.trigger(NO_SUCH_ID), io.NotFound)
    assert isinstance(s.retry(one.id), io.Retried)
    assert isinstance(s.retry(live.id), io.NotEnded)
    assert isinstance(s.retry(NO_SUCH_ID), io.NotFound)
    assert s.bulk("cancel", [live.id], status="pending", dry_run=True) == io.BulkDone(1)


REPLIES: dict[str, type[Any]] = {
    "schedule": io.ScheduleReply,
    "claim": io.ClaimReply,
    "finish": io.Finished,
    "heartbeat": io.Renewed | io.LeaseLapsed,
    "register": io.Registered,
    "deregister": io.Deregistered,
    "drain": io.Drained,
    "cancel": io.CancelReply,  # or, for a series id, io.SeriesCancelReply
    "reap": io.Reaped,
    "set_log_url": io.LogUrlsSet,
    "republish": io.Republished | io.LeaseLapsed,
    "served": io.Served,
    "deliver": io.Delivered,
    "look": io.LookReply,
    "outbox_ack": io.Acked,
    "pause": io.PauseReply,
    "trigger": io.TriggerReply,
    "retry": io.RetryReply,
    "bulk": io.BulkDone,
}


def test_every_reply_has_exactly_the_elements_of_its_struct(c: Client) -> None:
    every_reply_shape(c)
    assert isinstance(c.scripts, RecordingScripts)
    seen: set[type] = set()
    for name, raw in c.scripts.raw:
        if name == "cancel" and raw[:2] == [0, "series"]:
            decoded = msgspec.convert(raw, io.SeriesCancelReply)
        else:
            decoded = msgspec.convert(raw, REPLIES[name])
        check_lengths(raw, decoded, seen)
    assert {name for name, _ in c.scripts.raw} == set(SCRIPT_NAMES)
    structs = {
        t
        for t in vars(io).values()
        if isinstance(t, type) and issubclass(t, msgspec.Struct) and t is not io.Refusal
    }
    # Every reply Struct was met (the ARGV ones are not replies).
    assert structs - seen == {io.NextStart, io.ScheduleArgs}


# -- the headers ---------------------------------------------------------------------------

# Per script, in the order its header shows them: the Structs its "Returns" and its
# "Errors" lines describe (a nested record documented in the header counts too).
DOCUMENTED: dict[str, tuple[list[type[msgspec.Struct]], list[type[msgspec.Struct]]]] = {
    "schedule": ([io.Scheduled], [io.ParentUnknown, io.KeyHeld]),
    "claim": ([io.Claimed, io.ClaimedTask], [io.LeaseLapsed]),
    "finish": ([io.Finished], []),
    "heartbeat": ([io.Renewed], [io.LeaseLapsed]),
    "register": ([io.Registered], []),
    "deregister": ([io.Deregistered, io.Need], []),
    "drain": ([io.Drained], []),
    "cancel": ([io.Cancelled, io.SeriesCancelled], [io.NotFound, io.AlreadyEnded]),
    "reap": ([io.Reaped, io.Need], []),
    "set_log_url": ([io.LogUrlsSet], []),
    "republish": ([io.Republished], [io.LeaseLapsed]),
    "served": ([io.Served], []),
    "deliver": ([io.Delivered], []),
    "look": ([io.Looked], [io.LeaseLapsed]),
    "outbox_ack": ([io.Acked], []),
    "pause": ([io.Paused], [io.NotFound, io.AlreadyEnded]),
    "trigger": ([io.Triggered], [io.NotFound, io.AlreadyEnded]),
    "retry": ([io.Retried], [io.NotFound, io.NotEnded]),
    "bulk": ([io.BulkDone], []),
}


def header_section(name: str, label: str) -> str:
    """The text of one part (``Returns``, ``Errors``) of a script's header comment."""
    header = []
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        header.append(line[2:])
    text, inside = [], False
    for line in header:
        if not line.startswith("          "):  # not a continuation: a new part, by its name
            inside = line.split()[:1] == [label]
            line = line.strip()[len(label) :] if inside else line
        if inside:
            text.append(line)
    return " ".join(text)


def top_level_groups(text: str) -> list[int]:
    """How many elements each outermost ``{...}`` in ``text`` lists (commas inside nested
    braces, parentheses or quotes do not count)."""
    counts: list[int] = []
    depth, paren, quoted, elements = 0, 0, False, 0
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "{":
            depth += 1
            if depth == 1:
                elements = 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                counts.append(elements)
        elif ch == "(":
            paren += 1
        elif ch == ")":
            paren -= 1
        elif ch == "," and depth == 1 and paren == 0:
            elements += 1
    return counts


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_each_script_header_documents_replies_the_length_of_their_structs(name: str) -> None:
    returns, errors = DOCUMENTED[name]
    assert top_level_groups(header_section(name, "Returns")) == [struct_length(t) for t in returns]
    assert top_level_groups(header_section(name, "Errors")) == [struct_length(t) for t in errors]
