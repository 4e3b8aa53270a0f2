"""The log file of one task, written from inside the task's own process.

Every line is one JSON object in pino's shape, so pino-pretty, jq and log
shippers read the file as it is. Log records, and everything the job writes on
stdout and stderr (including C extensions and subprocesses, which bypass
``sys.stdout``), land in the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import orjson

__all__ = ["DEFAULT_MAX_LOG_BYTES", "MAX_LINE_BYTES", "TaskLog"]

DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024
"""Size at which a task's log is truncated, unless the task says otherwise."""

MAX_LINE_BYTES = 64 * 1024
"""Longest stdout/stderr line kept in one entry; longer output is split."""

_READ_SIZE = 64 * 1024
_STREAM_LEVELS = {"stdout": 30, "stderr": 50}
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pino_level(levelno: int) -> int:
    """Map a logging level (DEBUG=10 … CRITICAL=50) onto pino's (debug=20 … fatal=60)."""
    return min(60, max(10, (levelno // 10 + 1) * 10))


def _stringify(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the line
        return object.__repr__(value)


def _encode(doc: dict[str, Any]) -> bytes:
    """One JSON line; values orjson cannot encode are stringified rather than raising."""
    option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(doc, default=_stringify, option=option)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits and cycles fail without reaching `default`.
        safe: dict[str, Any] = {}
        for key, value in doc.items():
            try:
                orjson.dumps(value, default=_stringify, option=option)
                safe[key] = value
            except orjson.JSONEncodeError:
                safe[key] = _stringify(value)
        return orjson.dumps(safe, default=_stringify, option=option)


def _split_long(line: bytes) -> Iterator[bytes]:
    """Cut a line into pieces of at most MAX_LINE_BYTES, never inside a UTF-8 character."""
    while len(line) > MAX_LINE_BYTES:
        cut = MAX_LINE_BYTES
        # Continuation bytes are 0b10xxxxxx; step back to the start of the character.
        while cut > MAX_LINE_BYTES - 4 and line[cut] & 0xC0 == 0x80:
            cut -= 1
        yield line[:cut]
        line = line[cut:]
    yield line


class _Sink:
    """The open file: serialises writers, counts bytes and enforces the size cap."""

    def __init__(self, fd: int, max_bytes: int, fields: dict[str, Any]) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.fields = fields  # pid, hostname, task, job: on every line
        self.written = 0
        # Once set, output is dropped; readers keep draining so writers never block.
        self.discarding = False
        self.lock = threading.Lock()
        _SINKS.add(self)

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
        return _encode(doc)

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
            if self.written + len(data) > self.max_bytes:
                data = self._cut(data)
                self.discarding = True
            self.written += len(data)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:
                # Disk full or similar: nowhere left to report it; keep the job running.
                self.discarding = True

    def _cut(self, data: bytes) -> bytes:
        """Keep the whole lines that fit under the cap, then say the log was truncated."""
        room = self.max_bytes - self.written
        end = data.rfind(b"\n", 0, max(room, 0)) + 1
        note = f"log truncated at {self.max_bytes} bytes; further output discarded"
        return data[:end] + self.line(40, _now_ms(), note, {})

    def close(self) -> None:
        with self.lock:
            if self.fd < 0:
                return
            self.discarding = True
            os.close(self.fd)
            self.fd = -1


_SINKS: weakref.WeakSet[_Sink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A job may fork (multiprocessing) while a reader thread holds the lock;
    # the copy in the new process would otherwise deadlock on its first log record.
    for sink in _SINKS:
        sink.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _PinoHandler(logging.Handler):
    """Turns log records into pino lines in the task's file."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
            if record.exc_info and record.exc_info[1] is not None:
                extra["err"] = _error_fields(record.exc_info[1])
            if record.stack_info:
                extra["stack"] = record.stack_info
            level = _pino_level(record.levelno)
            time_ms = int(record.created * 1000)
            # A process the job forked logs under its own pid.
            line = self.sink.line(level, time_ms, record.getMessage(), extra, record.process)
            self.sink.write([line])
        except Exception:
            self.handleError(record)


def _error_fields(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": _stringify(exc),
        "stack": "".join(traceback.format_exception(exc)),
    }


def _pump(fd: int, sink: _Sink, stream: str) -> None:
    """Copy one redirected stream into the log until every writer has closed it."""
    encode = sink.stream_encoder(stream)
    pending = b""
    while True:
        try:
            chunk = os.read(fd, _READ_SIZE)
        except OSError:
            break
        if not chunk:
            break
        if sink.discarding:
            pending = b""  # still read: a writer blocked on a full pipe would hang the job
            continue
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:
            *more, pending = _split_long(pending)
            lines.extend(more)
        stamp = b"%d" % _now_ms()
        sink.write(encode(piece, stamp) for line in lines for piece in _split_long(line))
    if pending and not sink.discarding:
        sink.write([encode(pending, b"%d" % _now_ms())])
    os.close(fd)


class TaskLog:
    """The open log of one task, in the task's own process."""

    logger: logging.Logger
    """Records sent here (or to any logger, through the root) become pino lines."""

    def __init__(self, sink: _Sink, handler: _PinoHandler, readers: list[threading.Thread]) -> None:
        """Use :meth:`TaskLog.open`; this only holds what it set up."""
        self._sink = sink
        self._handler = handler
        self._readers = readers
        self._closed = False
        self.logger = logging.getLogger("perseid_jobs.task")

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        task_id: str,
        job: str,
        started_at_ms: int,
        attempt: int,
        max_bytes: int = DEFAULT_MAX_LOG_BYTES,
    ) -> TaskLog:
        """Create the log file and capture this process's stdout, stderr and logging into it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        fields = {"pid": os.getpid(), "hostname": socket.gethostname(), "task": task_id, "job": job}
        sink = _Sink(fd, max_bytes, fields)
        started = {"startedAt": started_at_ms, "attempt": attempt}
        sink.write([sink.line(30, _now_ms(), "task started", started)])

        handler = _PinoHandler(sink)
        _route_logging(handler)
        readers = [
            _redirect(target, stream, sink) for target, stream in ((1, "stdout"), (2, "stderr"))
        ]
        # Python-level writes go through the new fds too, flushed at each newline.
        sys.stdout = _line_buffered(1)
        sys.stderr = _line_buffered(2)
        return cls(sink, handler, readers)

    def exception(self, exc: BaseException, msg: str = "task raised") -> None:
        """Log an exception at level 50 with ``err`` holding its type, message and traceback."""
        self.logger.error(msg, exc_info=(type(exc), exc, exc.__traceback__))

    def close(self, timeout: float = 2.0) -> None:
        """Flush captured output into the file and close it.

        Waits at most ``timeout`` seconds for the pipes to drain: a process the
        job started in the background may still hold stdout open, and its later
        output is then discarded rather than keeping the task alive.
        """
        if self._closed:
            return
        self._closed = True
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # the job may have closed it
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        if any(reader.is_alive() for reader in self._readers):
            note = (
                "a process started by the task still holds stdout/stderr; its output is discarded"
            )
            self._sink.write([self._sink.line(40, _now_ms(), note, {})])
        for logger in (logging.getLogger(), self.logger):
            logger.removeHandler(self._handler)
        self._sink.close()

    def __enter__(self) -> TaskLog:
        """Use as a context manager; :meth:`close` runs on exit."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the log (see :meth:`close`)."""
        self.close()


def _route_logging(handler: _PinoHandler) -> None:
    """Send the task logger and every other logger of the job to the file."""
    # Handlers inherited from the worker would write to stderr, which is now the
    # log itself: records would show up twice, once as level-50 "stderr" text.
    root = logging.getLogger()
    for inherited in list(root.handlers):
        root.removeHandler(inherited)
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)  # pino's default: info and above
    task_logger = logging.getLogger("perseid_jobs.task")
    for inherited in list(task_logger.handlers):
        task_logger.removeHandler(inherited)
    task_logger.addHandler(handler)
    task_logger.propagate = False


def _redirect(target_fd: int, stream: str, sink: _Sink) -> threading.Thread:
    """Point ``target_fd`` at a pipe whose other end a thread copies into the log."""
    read_end, write_end = os.pipe()
    os.dup2(write_end, target_fd)  # fds 1/2 stay inheritable, so subprocesses write here too
    os.close(write_end)
    reader = threading.Thread(
        target=_pump, args=(read_end, sink, stream), name=f"tasklog-{stream}", daemon=True
    )
    reader.start()
    return reader


def _line_buffered(fd: int) -> TextIO:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
