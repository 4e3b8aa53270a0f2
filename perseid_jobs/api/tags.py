"""Tags: ``key=value`` labels a task carries, checked here and indexed in Redis.

A task's tags are stored in its hash as sorted ``key=value`` lines; each tag has an index,
a sorted set ``{ns}:tag:<key>=<value>`` of task ids by creation, which the scripts keep
(create_task.lua adds, trim_finished.lua removes with retention). A key is a name, a value
any text without control characters, so a line break cannot appear inside either and the
first ``=`` splits a tag (see docs/controls.md).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.errors import InvalidTag

MAX_TAGS = 16
"""The most tags one task carries."""

MAX_TAG_VALUE_CHARS = 128
"""The longest tag value: a label (a customer, an order id), not a payload."""

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _bad(tag: str, why: str) -> InvalidTag:
    return InvalidTag(
        f"--tag {tag[:60]!r}: {why}; give key=value, the key 1-64 letters, digits, '_', '.',"
        f" ':' or '-', the value 1-{MAX_TAG_VALUE_CHARS} characters without control characters"
    )


def _check(key: Any, value: Any) -> tuple[str, str]:
    shown = f"{key}={value}"
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise _bad(shown, "the key is not a name")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TAG_VALUE_CHARS:
        raise _bad(shown, f"the value must be text of 1-{MAX_TAG_VALUE_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad(shown, "the value holds a control character")
    return key, value


def parse_tag(text: str) -> tuple[str, str]:
    """``key=value`` as (key, value), else raise InvalidTag naming the fix."""
    key, eq, value = text.partition("=")
    if not eq:
        raise _bad(text, "no '='")
    return _check(key, value)


def parse_tags(texts: Iterable[str]) -> dict[str, str]:
    """Repeated ``--tag key=value`` options as a dict (a key given twice is refused)."""
    out: dict[str, str] = {}
    for text in texts:
        key, value = parse_tag(text)
        if key in out:
            raise _bad(text, f"the key {key!r} is given twice")
        out[key] = value
    return out


def encode_tags(tags: Mapping[str, str] | None) -> str:
    """Tags as stored: sorted ``key=value`` lines ("" for none); raises InvalidTag."""
    if not tags:
        return ""
    if not isinstance(tags, Mapping):
        raise _bad(str(tags), "tags must be a mapping of key to value")
    if len(tags) > MAX_TAGS:
        raise _bad(",".join(list(tags)[:3]), f"more than {MAX_TAGS} tags")
    return "\n".join(f"{k}={v}" for k, v in sorted(_check(k, v) for k, v in tags.items()))


def filter_tags(tag: str | Iterable[str] | None) -> list[str]:
    """A ``tasks(tag=...)`` filter as the ``key=value`` texts every task must carry."""
    if tag is None:
        return []
    texts = [tag] if isinstance(tag, str) else list(tag)
    return [f"{k}={v}" for k, v in (parse_tag(t) for t in texts)]


def tagged_ids(redis: Any, parts: Iterable[Any], tag: str, count: int) -> list[str]:
    """The ids of the newest ``count`` tasks with ``tag`` over every partition, newest first."""
    parts = list(parts)
    pipe = redis.pipeline(transaction=False)
    for keys in parts:
        pipe.zrevrange(keys.tagged(tag), 0, count - 1, withscores=True)
    merged = heapq.merge(*pipe.execute(), key=lambda pair: -pair[1])
    return [member for member, _ in list(merged)[:count]]
