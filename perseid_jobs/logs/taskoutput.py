"""The zygote's side of a task's log: the file and the two pipes it makes before the fork.

:class:`TaskOutput` owns them; the zygote reads the pipes in its own loop and
writes what the job printed as pino lines, while the task's process writes its
log records (:mod:`perseid_jobs.logs.tasklog`, which tells how the two share the
file and its size cap).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path

from .pino import MAX_LINE_BYTES, Sink, append_last, hostname, now_ms, split_long

__all__ = ["DEFAULT_MAX_LOG_BYTES", "MAX_LINE_BYTES", "TaskOutput", "started_line"]

DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024
"""Size at which a task's log is truncated, unless the task says otherwise."""

READ_SIZE = 64 * 1024
"""Bytes read from one pipe per call of :meth:`TaskOutput.read`."""

_DRAIN_LIMIT = 1024 * 1024  # per pipe once the task ended: a live writer could refill it forever
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
_STILL_HELD = "a process started by the task still holds stdout/stderr; its output is discarded"


def _create(path: Path) -> int:
    """A new, empty file at ``path``, open for appending; its directory made if missing."""
    # A new inode, never the old file emptied: an earlier attempt's log may also
    # live on in a directory bucket, as a second name of the same file.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        return os.open(path, _OPEN_FLAGS, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, _OPEN_FLAGS, 0o644)


class _Stream:
    """The zygote's end of one captured pipe: what it read up to the last newline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending = b""
        self.encode: Callable[[bytes, bytes], bytes] | None = None

    def lines(self, chunk: bytes) -> list[bytes]:
        """The whole lines ``chunk`` completes (long ones split); keeps the rest pending."""
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > MAX_LINE_BYTES:
            *more, self.pending = split_long(self.pending)
            lines.extend(more)
        return [piece for line in lines for piece in split_long(line)]


class TaskOutput:
    """A task's log file and its stdout/stderr pipes, made by the zygote before the fork.

    After the fork, the task's process hands it to :meth:`TaskLog.prepare`, and the
    zygote calls :meth:`attach`, then :meth:`read` whenever a pipe is readable,
    and :meth:`finish` once the task's process has ended.
    """

    def __init__(self, path: Path, *, task_id: str, job: str, max_bytes: int) -> None:
        """Create (or empty) the log file and the two pipes. Raises OSError."""
        self.task_id = task_id
        self.job = job
        self.max_bytes = max_bytes
        self.path = path  # renamed with it when a spare gets its task
        self.fd = _create(path)
        self.truncated = mmap.mmap(-1, 1)  # shared (MAP_SHARED) with the forked task
        self._streams: dict[int, _Stream] = {}
        self._write_ends: list[int] = []
        try:
            for name in ("stdout", "stderr"):
                read_end, write_end = os.pipe()
                self._streams[read_end] = _Stream(name)
                self._write_ends.append(write_end)
        except OSError:
            self.discard()
            raise
        self._sink: Sink | None = None

    @classmethod
    def received(cls, fds: list[int], *, task_id: str, job: str, max_bytes: int) -> TaskOutput:
        """In a reused task process: the output :meth:`handoff_fds` sent it, for one task."""
        output = cls.__new__(cls)
        output.task_id, output.job, output.max_bytes = task_id, job, max_bytes
        output.fd, *output._write_ends, flag = fds
        output.path = Path()
        output.truncated = mmap.mmap(flag, 1)
        os.close(flag)
        output._streams = {}
        output._sink = None
        return output

    def handoff_fds(self) -> list[int]:
        """In the zygote: the fds a reused process needs (file, pipes' write ends, flag).

        The truncation flag moves to a memfd, shared by mapping rather than by a
        fork. The caller owns the fds but the first (the zygote's own, for its
        writes): it closes them once sent.
        """
        flag = os.memfd_create("perseid-log-flag", os.MFD_CLOEXEC)
        os.ftruncate(flag, 1)
        self.truncated.close()
        self.truncated = mmap.mmap(flag, 1)
        fds, self._write_ends = [self.fd, *self._write_ends, flag], []
        return fds

    def note(self, msg: str) -> None:
        """In the zygote, once attached: an info line of its own in the task's log."""
        if self._sink is not None:
            self._sink.write([self._sink.line(30, now_ms(), msg, {})])

    @property
    def fds(self) -> list[int]:
        """The read ends the zygote still reads."""
        return list(self._streams)

    def redirect(self) -> None:
        """In the task's process: fds 1 and 2 become the pipes' write ends."""
        for target, write_end in zip((1, 2), self._write_ends, strict=True):
            os.dup2(write_end, target)  # inheritable: the job's subprocesses write here too
        for fd in (*self._write_ends, *self._streams):
            os.close(fd)
        self._write_ends.clear()
        self._streams.clear()

    def attach(self, pid: int) -> None:
        """In the zygote, after the fork: keep only the read ends; lines carry ``pid``."""
        for fd in self._write_ends:
            os.close(fd)
        self._write_ends.clear()
        fields = {"pid": pid, "hostname": hostname(), "task": self.task_id, "job": self.job}
        self._sink = Sink(self.fd, self.max_bytes, fields, self.truncated)
        for fd, stream in self._streams.items():
            os.set_blocking(fd, False)
            stream.encode = self._sink.stream_encoder(stream.name)

    def announce(self, *, started_at_ms: int, attempt: int) -> None:
        """In the zygote, once attached: write ``task started`` for the task's process.

        For a spare, whose pid is known before its task: written before the
        spare hears of the task, so it is the first line, and the spare need
        not write it (see :meth:`TaskLog.begin`).
        """
        assert self._sink is not None
        self._sink.write([started_line(self._sink, started_at_ms, attempt)])

    def read(self, fd: int, size: int = READ_SIZE) -> bool:
        """Read at most ``size`` bytes from pipe ``fd`` into the log; False once it is closed."""
        self._take(fd, size)
        return fd in self._streams

    @property
    def writing(self) -> bool:
        """True while this process is inside a write of the log (a signal handler asks)."""
        return self._sink is not None and self._sink.lock.locked()

    def finish(self, last: str = "", *, drain: bool = True) -> None:
        """Once the task's process ended: take what is left in the pipes, then close all.

        Never blocks: a process the job left running may hold a pipe open; what
        it wrote so far is kept, a line says so, and its later output is lost.
        ``last``: a level-50 line written after all that (why the task was killed).
        ``drain=False``, from a signal handler that interrupted a write of this
        log: only that line; the fds are left for the exit to close.
        """
        if not drain:
            if last and self._sink is not None:
                append_last(self.path, self._sink.line(50, now_ms(), last, {}))
            return
        held = False
        for fd in self.fds:
            taken = 0
            while fd in self._streams and taken < _DRAIN_LIMIT:
                chunk = self._take(fd, READ_SIZE)
                if chunk is None:
                    break
                taken += len(chunk)
            if fd in self._streams:
                held = True
                self._close_stream(fd)
        if held and self._sink is not None:
            self._sink.write([self._sink.line(40, now_ms(), _STILL_HELD, {})])
        if last and self._sink is not None:
            append_last(self.path, self._sink.line(50, now_ms(), last, {}))
        self.discard()

    def discard(self) -> None:
        """Close every fd held here, writing nothing (also in a task that inherited it)."""
        for fd in (*self._streams, *self._write_ends):
            os.close(fd)
        self._streams.clear()
        self._write_ends.clear()
        if self._sink is not None:
            self._sink.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.truncated.close()

    def _take(self, fd: int, size: int) -> bytes | None:
        """One read into the log: the bytes read (b"" at the end), None if none are ready."""
        try:
            chunk = os.read(fd, size)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk:
            self._close_stream(fd)
            return chunk
        stream = self._streams[fd]
        if self._sink is None or self._sink.discarding:
            stream.pending = b""  # still read: a writer blocked on a full pipe would hang the job
        else:
            self._write(stream, stream.lines(chunk))
        return chunk

    def _close_stream(self, fd: int) -> None:
        """Write the last unterminated line of a stream and close its pipe."""
        stream = self._streams.pop(fd)
        if stream.pending:
            self._write(stream, [stream.pending])
        os.close(fd)

    def _write(self, stream: _Stream, lines: list[bytes]) -> None:
        if self._sink is None or stream.encode is None or not lines:
            return
        stamp = b"%d" % now_ms()
        encode = stream.encode
        self._sink.write(encode(line, stamp) for line in lines)


def started_line(sink: Sink, started_at_ms: int, attempt: int) -> bytes:
    started = {"startedAt": started_at_ms, "attempt": attempt}
    return sink.line(30, now_ms(), "task started", started)
