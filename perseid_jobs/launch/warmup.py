"""What the warm parent (the zygote) does once, after importing the jobs and before any fork.

Two things, both paid once here instead of in every task process:

- **Each job's own warm-up** (:data:`HOOK`): a job file may define a module-level
  ``warm_up()``; the zygote calls it once, after the file is imported. What it
  prepares (imports, parsed configuration, a loaded model, a compiled table)
  every task process inherits. A hook that raises, or that is not a plain
  function, makes its job fail to load, exactly as an import error does.
- **What a first connection needs** (:func:`prewarm_connections`): in a freshly
  forked process the first Redis, database or HTTP connection imports modules
  lazily and reads files the parent never needed. Measured on the benchmark's
  2-core VM (``bench/connect_cost.py``), a child of a parent that imported
  redis-py and then connects and RPUSHes one item imports ``encodings.idna``
  (and with it ``stringprep`` and the ``unicodedata`` C extension: a host name
  is encoded with the IDNA codec before ``getaddrinfo``), ``secrets`` and
  ``hmac`` (redis-py names each connection pool with ``secrets.token_hex``),
  and ``email.parser`` and ``email.feedparser`` (redis-py sends its version on
  connect, read with ``importlib.metadata``, which scans ``sys.path`` and
  parses the distribution's METADATA). With a host name rather than an
  address, glibc also reads ``nsswitch.conf``, ``host.conf`` and
  ``resolv.conf`` and tries nscd's socket, once per process. All of that is
  done here, so a child inherits it done.

Only the standard library and what the jobs imported themselves are touched:
the IDNA codec for every zygote, the rest only if a job imported ``redis``. A
module imported here is one a connecting task would have imported anyway; the
zygote grows by a few hundred kB, shared by every child.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType

from ..core.jobfile import JobSpec, job_module_name, load_jobs_dir

HOOK = "warm_up"
"""The name of a job file's own warm-up function (module level, no arguments)."""

CONNECT_MODULES = ("encodings.idna", "stringprep", "unicodedata")
"""Imported lazily by the first connection to a host name, whatever the client."""

# What a client library's first connection imports, and the distribution whose
# version it asks importlib.metadata for (the first lookup in a process lists
# sys.path and imports the email parser), by the module name a job imports.
# Only for a library a job imported: `secrets` alone would import `random`, whose
# fork handler then reseeds it in every task process.
_BY_LIBRARY: dict[str, tuple[tuple[str, ...], str]] = {
    "redis": (("secrets", "hmac", "email.parser", "email.feedparser"), "redis"),
}


def load_warm(directory: Path) -> tuple[dict[str, JobSpec], list[str]]:
    """The zygote's load: import every job file, run each one's warm-up, pre-warm connections.

    Returns (jobs by name, one error line per job file that could not be loaded),
    as :func:`~perseid_jobs.core.jobfile.load_jobs_dir` does; a failed warm-up is one
    more such line, and its job is left out.
    """
    jobs, errors = load_jobs_dir(directory)
    for name, spec in list(jobs.items()):
        error = run_hook(spec)
        if error:
            errors.append(error)
            del jobs[name]
            sys.modules.pop(job_module_name(name), None)
    prewarm_connections()
    return jobs, errors


def run_hook(spec: JobSpec) -> str:
    """Call the job file's ``warm_up()`` if it has one: '' on success, else the error line."""
    module: ModuleType | None = sys.modules.get(job_module_name(spec.name))
    hook = getattr(module, HOOK, None)
    if hook is None:
        return ""
    if not callable(hook):
        kind = type(hook).__name__
        return f"{spec.path}: {HOOK} must be a function taking no arguments, not {kind}"
    try:
        result = hook()
    except BaseException as exc:  # as at import: a hook may raise anything, even SystemExit
        return f"{spec.path}: {HOOK}() failed: {_one_line(exc)}"
    if isinstance(result, Awaitable):
        # Running it would import asyncio into the parent every task is forked from.
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return f"{spec.path}: {HOOK} must be a plain function (def), not async def"
    return ""


def prewarm_connections() -> None:
    """Do once what the first connection of every forked process would (see the docstring)."""
    for name in CONNECT_MODULES:
        importlib.import_module(name)
    # glibc's resolver configuration (nsswitch.conf, host.conf, resolv.conf), read on the
    # first name lookup of a process. "localhost" comes from /etc/hosts: no query is sent.
    with contextlib.suppress(OSError, UnicodeError):
        socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    for library, (modules, distribution) in _BY_LIBRARY.items():
        if library not in sys.modules:
            continue
        for name in modules:
            importlib.import_module(name)
        from importlib import metadata

        with contextlib.suppress(Exception):  # not installed as a distribution: nothing to warm
            metadata.version(distribution)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the worker logs one line per job file skipped)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
