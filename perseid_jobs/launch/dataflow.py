"""A task's data for the worker: its result and its progress (docs/dataflow.md).

The task process imports neither the store nor redis, so what it returns and the
progress it reports travel to the worker over the channel it already has: in a fresh
process, the pipe that carries the reason of a failure; in a reused one, the socket that
carries its :class:`~perseid_jobs.launch.protocol.TaskDone`. Each datum is a *frame*: a
record separator (``\\x1e``), a kind letter, JSON, a newline, so the zygote tells frames
from the plain reason text written last. JSON text never holds a raw newline.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .protocol import Progress

PROGRESS_EVERY_S = 0.2
"""At most one progress write per task this often (a tight loop costs ~5 writes a second)."""

MAX_MESSAGE_CHARS = 200
"""A progress message is cut to this length: a status line, not a log."""

_FRAME = b"\x1e"
_PROGRESS, _RESULT = b"P", b"R"
_encoder = msgspec.json.Encoder()


class BadResult(Exception):
    """The job's return value cannot be stored; the message is the task's reason."""


def encode_result(value: Any, max_bytes: int) -> str:
    """The return value as JSON text ("" for None), or raise :class:`BadResult`."""
    if value is None:
        return ""
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadResult(
            f"result is not JSON-serialisable ({type(value).__name__}: {exc}): return a dict,"
            " list, str, number, bool or None"
        ) from None
    if len(data) > max_bytes:
        raise BadResult(
            f"result is {len(data)} bytes as JSON, over the {max_bytes}-byte cap: store the"
            " data elsewhere and return a reference, or raise the worker's --max-result-bytes"
        )
    return data.decode()


def result_frame(result: str) -> bytes:
    """The frame carrying a result (JSON text)."""
    return _FRAME + _RESULT + result.encode() + b"\n"


class ProgressReporter:
    """``task.progress`` in the task process: coalesced, so a tight loop writes ~5 times a
    second; the last value is sent when the task ends (:meth:`flush`)."""

    def __init__(self, send: Callable[[bytes], None] | None) -> None:
        self.send = send
        self.last: tuple[float, str | None] | None = None
        self.sent_at = -PROGRESS_EVERY_S
        self.unsent = False

    def report(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0.0 to 1.0; clamped), sent now or at the next chance."""
        value = min(1.0, max(0.0, float(fraction)))
        if value != value:  # NaN: nothing to show
            raise ValueError("progress fraction must be a number from 0.0 to 1.0")
        text = None if message is None else str(message)[:MAX_MESSAGE_CHARS]
        self.last, self.unsent = (value, text), True
        now = time.monotonic()
        if now - self.sent_at >= PROGRESS_EVERY_S:
            self.sent_at = now
            self.flush()

    def flush(self) -> None:
        """Send the last value if it was not sent."""
        if self.send is None or not self.unsent or self.last is None:
            return
        self.unsent = False
        self.send(_FRAME + _PROGRESS + _encoder.encode(list(self.last)) + b"\n")


def progress_of(frame: bytes) -> tuple[float, str | None] | None:
    """The progress a frame (without its separator, or with it) carries, else None."""
    frame = frame.removeprefix(_FRAME)
    if frame[:1] != _PROGRESS:
        return None
    value, message = msgspec.json.decode(frame[1:])
    return float(value), None if message is None else str(message)


def is_frame(line: bytes) -> bool:
    """Whether a line of a reused process's socket is a frame (else a TaskDone)."""
    return line.startswith(_FRAME)


class FrameReader:
    """The zygote's side: frames out of a task's byte stream, the rest as reason text."""

    def __init__(self) -> None:
        self.buffer = b""
        self.result = ""
        self.reason = b""

    def feed(self, data: bytes) -> list[tuple[float, str | None]]:
        """Take bytes read; returns the progress values complete in them, in order."""
        self.buffer += data
        out: list[tuple[float, str | None]] = []
        while self.buffer.startswith(_FRAME):
            end = self.buffer.find(b"\n")
            if end < 0:
                return out  # the rest of this frame comes later
            frame, self.buffer = self.buffer[1:end], self.buffer[end + 1 :]
            if frame[:1] == _RESULT:
                self.result = frame[1:].decode("utf-8", "replace")
            elif (value := progress_of(frame)) is not None:
                out.append(value)
        self.reason += self.buffer  # what no frame starts: the reason, written last
        self.buffer = b""
        return out


class ResultPipes:
    """The zygote's fresh task processes' result pipes, read as data comes (a result may be
    more than a pipe holds): progress goes on to the worker at once (``send``), the result
    and the reason wait for the reap."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self.send = send
        self.fds: dict[int, tuple[str, FrameReader]] = {}  # result fd -> task id, its frames
        self.poller: Any = None

    def watch(self, fd: int, task_id: str, poller: Any) -> None:
        """Read a new task's pipe in the zygote's loop."""
        self.poller = poller
        self.fds[fd] = (task_id, FrameReader())
        poller.register(fd, select.POLLIN)

    def read(self, fd: int) -> None:
        """One read of a pipe the loop found ready."""
        with contextlib.suppress(BlockingIOError):
            if not self._feed(fd, os.read(fd, 1 << 16)):
                self.poller.unregister(fd)  # the task closed it: the reap reads what is left

    def _feed(self, fd: int, data: bytes) -> bytes:
        task_id, reader = self.fds[fd]
        for fraction, message in reader.feed(data):
            self.send(Progress(id=task_id, fraction=fraction, message=message))
        return data

    def end(self, fd: int) -> FrameReader:
        """At the reap: the rest of a task's pipe (its result, its reason); the pipe closed."""
        with contextlib.suppress(BlockingIOError):
            while self._feed(fd, os.read(fd, 1 << 16)):
                pass
        with contextlib.suppress(KeyError):  # unregistered already at its end
            self.poller.unregister(fd)
        os.close(fd)
        return self.fds.pop(fd)[1]
