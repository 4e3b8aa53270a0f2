"""Pino-shaped JSON lines, and the one writer of a task's log file in each process.

Both the zygote (captured stdout and stderr) and the task's process (log
records) append to the same file through a :class:`Sink`; the size cap holds
across both (see :mod:`perseid_jobs.logs.tasklog`).
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

MAX_LINE_BYTES = 64 * 1024
"""Longest stdout/stderr line kept in one entry; longer output is split."""

_STREAM_LEVELS = {"stdout": 30, "stderr": 50}


def now_ms() -> int:
    """Epoch milliseconds, as pino's ``time``."""
    return time.time_ns() // 1_000_000


@functools.cache
def hostname() -> str:
    """This machine's name, as pino's ``hostname``."""
    # Asked once in the zygote; every task process inherits the answer. What
    # socket.gethostname() returns, without importing socket into the zygote.
    return os.uname().nodename


def pino_level(levelno: int) -> int:
    """Map a logging level (DEBUG=10 … CRITICAL=50) onto pino's (debug=20 … fatal=60)."""
    return min(60, max(10, (levelno // 10 + 1) * 10))


def stringify(value: object) -> str:
    """``str(value)``, or its bare repr if its ``__str__`` fails."""
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the line
        return object.__repr__(value)


def encode_line(doc: dict[str, Any]) -> bytes:
    """One JSON line; values orjson cannot encode are stringified rather than raising."""
    option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(doc, default=stringify, option=option)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits and cycles fail without reaching `default`.
        safe: dict[str, Any] = {}
        for key, value in doc.items():
            try:
                orjson.dumps(value, default=stringify, option=option)
                safe[key] = value
            except orjson.JSONEncodeError:
                safe[key] = stringify(value)
        return orjson.dumps(safe, default=stringify, option=option)


def closing_line(level: int, msg: str, *, pid: int, task: str, job: str) -> bytes:
    """A line of the task's log written for it, once it ended (e.g. why it was killed)."""
    doc = {"level": level, "time": now_ms(), "pid": pid, "hostname": hostname(), "msg": msg}
    return encode_line(doc | {"task": task, "job": job})


def append_last(path: str | os.PathLike[str], line: bytes) -> None:
    """Append one last line to a log whose writers are gone, past any size cap.

    What ended the task is worth the bytes. A writer cut off mid-line (killed)
    left no newline: one is added first, so the last line stays whole JSON.
    Best effort: a log that cannot be written to is left as it is.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    except OSError:
        pass
    finally:
        os.close(fd)


def split_long(line: bytes) -> Iterator[bytes]:
    """Cut a line into pieces of at most MAX_LINE_BYTES, never inside a UTF-8 character."""
    while len(line) > MAX_LINE_BYTES:
        cut = MAX_LINE_BYTES
        # Continuation bytes are 0b10xxxxxx; step back to the start of the character.
        while cut > MAX_LINE_BYTES - 4 and line[cut] & 0xC0 == 0x80:
            cut -= 1
        yield line[:cut]
        line = line[cut:]
    yield line


class Sink:
    """One process's writer of the file: serialises its threads and enforces the size cap."""

    def __init__(
        self, fd: int, max_bytes: int, fields: dict[str, Any], truncated: mmap.mmap
    ) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.fields = fields  # pid, hostname, task, job: on every line
        # One byte shared by every writer of the file; once set, output is dropped
        # (readers keep draining so writers never block).
        self.truncated = truncated
        self.lock = threading.Lock()
        _SINKS.add(self)

    @property
    def discarding(self) -> bool:
        """True once the log was truncated (by any writer) or closed here."""
        return self.fd < 0 or self.truncated[0] != 0

    def line(
        self, level: int, time_ms: int, msg: str, extra: dict[str, Any], pid: int | None = None
    ) -> bytes:
        doc: dict[str, Any] = {"level": level, "time": time_ms}
        doc["pid"] = self.fields["pid"] if pid is None else pid
        doc["hostname"] = self.fields["hostname"]
        doc["msg"] = msg
        doc["task"] = self.fields["task"]
        doc["job"] = self.fields["job"]
        for key, value in extra.items():
            doc.setdefault(key, value)  # an extra named like a core field must not forge it
        return encode_line(doc)

    def stream_encoder(self, stream: str) -> Callable[[bytes, bytes], bytes]:
        """A fast encoder for captured output: only time and msg vary between lines."""
        head = b'{"level":%d,"time":' % _STREAM_LEVELS[stream]
        middle = orjson.dumps({"pid": self.fields["pid"], "hostname": self.fields["hostname"]})
        middle = b"," + middle[1:-1] + b',"msg":'
        tail = orjson.dumps({"task": self.fields["task"], "job": self.fields["job"]})
        tail = b"," + tail[1:-1] + b',"stream":"' + stream.encode() + b'"}\n'

        def encode(raw: bytes, time_ms: bytes) -> bytes:
            text = raw.decode("utf-8", errors="replace")
            return head + time_ms + middle + orjson.dumps(text) + tail

        return encode

    def write(self, lines: Iterable[bytes]) -> None:
        with self.lock:
            if self.discarding:
                return
            data = b"".join(lines)
            try:
                # A POSIX record lock (per process) makes check-size-then-append atomic
                # across the two writers, so the cap and the one truncation line hold.
                fcntl.lockf(self.fd, fcntl.LOCK_EX)
                try:
                    if self.truncated[0]:
                        return
                    # The file's size, not a count of our own: the other process appends too.
                    size = os.fstat(self.fd).st_size
                    if size + len(data) > self.max_bytes:
                        self.truncated[0] = 1
                        data = self._cut(data, size)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self.fd, view) :]
                finally:
                    fcntl.lockf(self.fd, fcntl.LOCK_UN)
            except OSError:
                # Disk full or similar: nowhere left to report it; keep the job running.
                self.truncated[0] = 1

    def _cut(self, data: bytes, size: int) -> bytes:
        """Keep the whole lines that fit under the cap, then say the log was truncated."""
        room = self.max_bytes - size
        end = data.rfind(b"\n", 0, max(room, 0)) + 1
        note = f"log truncated at {self.max_bytes} bytes; further output discarded"
        return data[:end] + self.line(40, now_ms(), note, {})

    def close(self) -> None:
        with self.lock:
            if self.fd < 0:
                return
            os.close(self.fd)
            self.fd = -1


_SINKS: weakref.WeakSet[Sink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A job may fork (multiprocessing) while one of its threads holds the lock;
    # the copy in the new process would otherwise deadlock on its first log record.
    for sink in _SINKS:
        sink.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
