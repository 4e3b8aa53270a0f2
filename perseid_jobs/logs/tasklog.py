"""The log file of one task: its log records and its captured output, as pino lines.

Every line is one JSON object in pino's shape, so pino-pretty, jq and log
shippers read the file as it is. Log records, and everything the job writes on
stdout and stderr (including C extensions and subprocesses, which bypass
``sys.stdout``), land in the same file.

Two processes write it, and the task's own process runs no thread for it. The
zygote prepares a :class:`~perseid_jobs.logs.taskoutput.TaskOutput` before it forks:
the file, opened with O_APPEND, and two pipes. In the task's process
:meth:`TaskLog.prepare` points fds 1 and 2 at the pipes, :meth:`TaskLog.begin`
writes the first line, and the log records follow (this module); the zygote
reads the pipes in its own loop (:meth:`TaskOutput.read`, in taskoutput.py) and
writes what the job printed. Each writer appends whole lines in one ``write``, so lines never
interleave. The size cap holds across both: each checks the file's size with
``fstat`` before writing, and the first to reach the cap writes the one
truncation line and sets a flag in memory both processes share.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sys
import traceback
from types import TracebackType
from typing import TextIO

from .pino import Sink, hostname, pino_level, stringify
from .taskoutput import DEFAULT_MAX_LOG_BYTES, MAX_LINE_BYTES, TaskOutput, started_line

__all__ = ["DEFAULT_MAX_LOG_BYTES", "MAX_LINE_BYTES", "TaskLog", "TaskOutput", "route_process"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _PinoHandler(logging.Handler):
    """Turns log records into pino lines in the task's file."""

    def __init__(self, sink: Sink | None) -> None:
        super().__init__()
        self.sink = sink  # None in the zygote, until a task's process sets its own

    def emit(self, record: logging.LogRecord) -> None:
        if self.sink is None:  # the zygote's own records: warnings to its stderr
            if logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        try:
            extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
            if record.exc_info and record.exc_info[1] is not None:
                extra["err"] = _error_fields(record.exc_info[1])
            if record.stack_info:
                extra["stack"] = record.stack_info
            level = pino_level(record.levelno)
            time_ms = int(record.created * 1000)
            # A process the job forked logs under its own pid.
            line = self.sink.line(level, time_ms, record.getMessage(), extra, record.process)
            self.sink.write([line])
        except Exception:
            self.handleError(record)


def _error_fields(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": stringify(exc),
        "stack": "".join(traceback.format_exception(exc)),
    }


class TaskLog:
    """The open log of one task, in the task's own process."""

    logger: logging.Logger
    """Records sent here (or to any logger, through the root) become pino lines."""

    def __init__(self, sink: Sink, handler: _PinoHandler) -> None:
        """Use :meth:`TaskLog.prepare`; this only holds what it set up."""
        self._sink = sink
        self._handler = handler
        self._closed = False
        self.logger = logging.getLogger("perseid_jobs.task")

    @classmethod
    def prepare(cls, output: TaskOutput) -> TaskLog:
        """Point stdout, stderr and logging at the log, before the task is known.

        A process forked ahead of its task (a spare) does this while it waits;
        :meth:`begin` then names the task and writes the first line.
        """
        output.redirect()
        fields = {"pid": os.getpid(), "hostname": hostname()}
        fields |= {"task": output.task_id, "job": output.job}
        sink = Sink(output.fd, output.max_bytes, fields, output.truncated)
        if _ROUTED is not None:  # set up once in the zygote: only the sink is this task's
            _ROUTED.sink = sink
            return cls(sink, _ROUTED)
        handler = _PinoHandler(sink)
        _route_logging(handler)
        _write_stdio_by_line()
        return cls(sink, handler)

    @classmethod
    def rehearsal(cls, fd: int) -> TaskLog:
        """In the zygote: a log on ``fd`` (``/dev/null``) that goes where a task's would.

        Through the handler :func:`route_process` set up, whose sink stays the
        zygote's (None); for :func:`perseid_jobs.launch.taskproc.rehearse`.
        """
        assert _ROUTED is not None, "route_process() first"
        sink = Sink(fd, DEFAULT_MAX_LOG_BYTES, {"pid": 0, "hostname": hostname()}, mmap.mmap(-1, 1))
        sink.fields |= {"task": "", "job": ""}
        return cls(sink, _ROUTED)

    def begin(
        self,
        *,
        started_at_ms: int,
        attempt: int,
        task_id: str = "",
        job: str = "",
        max_bytes: int = 0,
        announce: bool = True,
    ) -> None:
        """Write ``task started`` (unless the zygote did: ``announce=False``).

        First names the task if :meth:`prepare` did not know it.
        """
        sink = self._sink
        if task_id:
            sink.fields["task"] = task_id
            sink.fields["job"] = job
            sink.max_bytes = max_bytes
        if announce:
            sink.write([self.sample_line(started_at_ms=started_at_ms, attempt=attempt)])

    def sample_line(self, *, started_at_ms: int, attempt: int) -> bytes:
        """The ``task started`` line, made but not written."""
        return started_line(self._sink, started_at_ms, attempt)

    def close(self) -> None:
        """Flush what Python still buffers for stdout and stderr, and close the file here.

        Returns at once: the zygote takes what is left in the pipes when the
        process has ended, whether or not a background process still holds them.
        """
        if self._closed:
            return
        self._closed = True
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # the job may have closed it
                stream.flush()
        if self._handler is not _ROUTED:
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


_ROUTED: _PinoHandler | None = None


def route_process() -> None:
    """In the zygote, once: set up what every task process forked from it would.

    Logging goes to one handler, whose sink each task's process points at its
    own log; ``sys.stdout`` and ``sys.stderr`` write fds 1 and 2 line by line
    (in a task's process, its pipes, once :meth:`TaskLog.prepare` redirects
    them). Done once here rather than in every task, which would pay for it in
    copy-on-write page faults.
    """
    global _ROUTED
    handler = _PinoHandler(None)
    _route_logging(handler)
    _write_stdio_by_line()
    _ROUTED = handler


def _write_stdio_by_line() -> None:
    """Python-level writes to stdout and stderr go to fds 1 and 2, flushed at each newline."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    sys.stdout = _line_buffered(1)
    sys.stderr = _line_buffered(2)


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


def _line_buffered(fd: int) -> TextIO:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
