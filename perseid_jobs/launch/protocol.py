"""What the worker and its zygote say to each other, one JSON object a line.

The worker writes :data:`Request` messages on one pipe, the zygote answers with
:data:`Event` messages on another. A spare task process gets its
:class:`StartRequest` the same way, on a pipe of its own.
"""

from __future__ import annotations

import contextlib
import os

import msgspec

from ..core.models import JobDefinition

DEFAULT_MAX_RESULT_BYTES = 64 * 1024
"""The largest result stored, as JSON (``--max-result-bytes``, ``PERSEID_MAX_RESULT_BYTES``)."""


class StartRequest(msgspec.Struct, tag="start"):
    """Worker -> zygote: run one task."""

    id: str
    job: str
    args: str
    attempt: int
    started_at_ms: int
    last_completed_at: str
    skipped_runs: str
    log_path: str
    max_log_bytes: int
    deadline: float = 0.0  # when the worker times it out (time.monotonic()); 0: not said
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # the cap of its result, as JSON
    parent_results: str = ""  # JSON object, parent id -> result, of a dependent ("": none)


class TaskDone(msgspec.Struct):
    """Reused task process -> zygote: its task ended (a return, an exception, a cancel).

    ``code`` is what the exit code would have been in a fresh process; ``rss``
    the process's resident memory after the task, in bytes; ``ends``: the task
    called ``sys.exit``, so the process exits now.
    """

    code: int
    reason: str
    rss: int
    ends: bool = False
    result: str = ""  # what the job returned, as JSON text ("" for None)


class Stop(msgspec.Struct, tag="stop"):
    """Worker -> zygote: kill every task and exit."""


class LeaseUntil(msgspec.Struct, tag="lease"):
    """Worker -> zygote: the lease holds until ``deadline`` (``time.monotonic()`` seconds)."""

    deadline: float


class Warm(msgspec.Struct, tag="warm"):
    """Worker -> zygote: a start is due in a moment; go through the loop now.

    On an idle machine a process's code and data leave the CPU caches, and its
    first steps after a long sleep run several times slower (measured on a
    2-core VM: a Redis round trip from redis-py after 50 ms idle takes 0.4 to 0.9 ms
    instead of 0.05 to 0.1 ms). Sent shortly before a known due time, so the start
    itself finds the path warm.
    """


class Retire(msgspec.Struct, tag="retire"):
    """Worker -> zygote: start nothing more; exit once the running tasks have ended.

    Sent to a zygote that a fresh one (loaded from the changed jobs directory)
    replaces: its tasks run on undisturbed, their exits reported as before.
    """


class Ready(msgspec.Struct, tag="ready"):
    """Zygote -> worker: the jobs it loaded and the files it could not."""

    jobs: dict[str, JobDefinition]
    errors: list[str]
    fork: str = "os"  # how it forks task processes: "libc" or "os" (see launch.forking)


class Started(msgspec.Struct, tag="started"):
    """Zygote -> worker: the task's process exists."""

    id: str
    pid: int


class Exited(msgspec.Struct, tag="exited"):
    """Zygote -> worker: the task's process ended (``status`` as from waitpid)."""

    id: str
    pid: int
    status: int
    reason: str
    result: str = ""  # what the job returned, as JSON text ("" for None or a failure)


class Progress(msgspec.Struct, tag="progress"):
    """Zygote -> worker: a task's progress (already coalesced by the task: launch.dataflow)."""

    id: str
    fraction: float
    message: str | None = None


Request = StartRequest | Stop | LeaseUntil | Warm | Retire
Event = Ready | Started | Exited | Progress
request_decoder = msgspec.json.Decoder(Request)
event_decoder = msgspec.json.Decoder(Event)
encoder = msgspec.json.Encoder()


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (its bytes only say "look")."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
