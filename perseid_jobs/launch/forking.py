"""How the zygote forks: libc's ``fork`` with the registered fork handlers, when that is safe.

``os.fork`` runs CPython's after-fork pass in every child: it re-creates the
interpreter's locks, drops other threads' states and calls every handler given
to ``os.register_at_fork`` (``threading`` and ``logging`` re-make their locks,
``random`` reseeds). In a forked child each page first written is copied, and
that pass writes to pages the task itself never would: measured on a 2-core VM,
a child of the zygote that exits at once costs 1.06 ms of CPU and 238 page
copies after ``os.fork``, 0.46 ms and 46 after libc's ``fork`` — 0.3 ms less
per real task, once its own work is counted (docs/benchmark.md).

In a process with one thread, nothing of that pass is needed but the handlers
that change state rather than re-make unheld locks. So the zygote:

- calls :func:`record` before it imports anything that registers a handler (the
  package itself registers none), so every handler registered from then on —
  by ``random``, by a library a job imports — is also kept here;
- calls :func:`choose` once its jobs are loaded: libc's ``fork`` only if the
  process has one thread (``/proc/self/task``), every handler was recorded, and
  ``PERSEID_JOBS_PLAIN_FORK`` is not set; otherwise ``os.fork`` as usual;
- forks through :func:`fork`, which runs the recorded handlers as ``os.fork``
  would (``before`` in reverse order, the others in order), except those of
  ``threading`` and ``logging``: with no other thread they re-make locks no one
  holds.

Left undone in the child, with one thread: ``threading.main_thread().native_id``
keeps the zygote's thread id (``threading.get_native_id()`` is right).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterable

Handler = Callable[[], object]

PLAIN_FORK_ENV = "PERSEID_JOBS_PLAIN_FORK"
"""Set (to anything but empty) to fork task processes with ``os.fork`` always."""

# Modules whose handlers only re-make locks (no other thread can hold them here).
_LOCKS_ONLY = frozenset({"threading", "logging", "perseid_jobs.logs.pino"})
# Stdlib modules that register handlers: imported before `record`, they were missed.
_REGISTER_ON_IMPORT = ("random", "threading", "logging", "concurrent.futures.thread")

_before: list[Handler] = []
_in_parent: list[Handler] = []
_in_child: list[Handler] = []
_recording = False
_libc_fork: Callable[[], int] | None = None


def record() -> None:
    """From now on, keep every handler given to ``os.register_at_fork`` (and register it)."""
    global _recording
    if _recording:
        return
    register = os.register_at_fork
    missed = [name for name in _REGISTER_ON_IMPORT if name in sys.modules]
    lists = {"before": _before, "after_in_parent": _in_parent, "after_in_child": _in_child}

    def register_at_fork(
        *,
        before: Handler | None = None,
        after_in_parent: Handler | None = None,
        after_in_child: Handler | None = None,
    ) -> None:
        given = {
            "before": before,
            "after_in_parent": after_in_parent,
            "after_in_child": after_in_child,
        }
        handlers = {kind: h for kind, h in given.items() if h is not None}
        register(**handlers)  # as before: os.fork runs them; it also checks the arguments
        for kind, handler in handlers.items():
            if getattr(handler, "__module__", None) not in _LOCKS_ONLY:
                lists[kind].append(handler)

    os.register_at_fork = register_at_fork
    _recording = not missed


def choose() -> str:
    """Pick the fork :func:`fork` uses from now on; returns ``"libc"`` or ``"os"``."""
    global _libc_fork
    _libc_fork = None
    if _recording and not os.environ.get(PLAIN_FORK_ENV) and _threads() == 1:
        libc_fork = ctypes.CDLL(None, use_errno=True).fork
        libc_fork.restype = ctypes.c_int
        libc_fork.argtypes = []
        _libc_fork = libc_fork
    return "os" if _libc_fork is None else "libc"


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0  # unknown: not safe


def fork() -> int:
    """Fork; 0 in the child, the child's pid in the parent (see the module docstring)."""
    libc_fork = _libc_fork
    if libc_fork is None:
        return os.fork()
    _run(reversed(_before))
    pid = libc_fork()
    if pid < 0:
        errno = ctypes.get_errno()
        _run(_in_parent)
        raise OSError(errno, os.strerror(errno))
    _run(_in_child if pid == 0 else _in_parent)
    return pid


def _run(handlers: Iterable[Handler]) -> None:
    for handler in handlers:
        try:
            handler()
        except Exception as exc:  # as os.fork does: reported, not raised
            print(f"Exception ignored in fork handler {handler!r}: {exc!r}", file=sys.stderr)
