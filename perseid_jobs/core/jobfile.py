"""Job scripts: the ``@job`` decorator and loading a jobs directory.

A job is a file ``<jobs dir>/<name>.py`` with exactly one function decorated
``@job(max_duration=..., slots=...)``; its name is the file stem.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .durations import DurationError, parse_duration
from .errors import InvalidJobName, JobDefinitionError
from .models import JobDefinition

JOB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ATTR = "__perseid_job__"
_REUSE_ATTR = "__perseid_reuse__"  # (max tasks per process, max RSS bytes): the zygote's business
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_MEMORY_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

F = TypeVar("F", bound=Callable[..., Any])


class JobSpec(msgspec.Struct, frozen=True):
    """A loaded job: what ``@job(...)`` declared and the function to call."""

    name: str
    path: str
    options: JobDefinition
    func: Callable[..., Any]
    max_tasks_per_process: int = 1
    max_memory_bytes: int = 0  # 0: no limit

    def definition(self) -> JobDefinition:
        """The catalog entry a worker publishes for this job."""
        return msgspec.structs.replace(
            self.options,
            max_tasks_per_process=self.max_tasks_per_process,
            max_memory_bytes=self.max_memory_bytes,
        )


def job(
    *,
    max_duration: str | int | float,
    slots: int = 1,
    retries: int = 0,
    backoff: str | int | float = "1s",
    max_tasks_per_process: int = 1,
    max_memory_per_process: str | int | None = None,
    concurrency: int | None = None,
    group_concurrency: int | None = None,
    rate: str | None = None,
    group_rate: str | None = None,
) -> Callable[[F], F]:
    """Mark the function a job file runs.

    ``max_duration`` is seconds or a duration text (``"90s"``, ``"10m"``,
    ``"2h"``); past it the task's process group is killed and the task fails.
    ``slots`` is the weight the task takes from its instance's ``--slots``.
    ``retries``: how many times a failed task runs again (none by default);
    attempt ``n`` waits ``backoff * 2**(n-1)`` after the failure before it is due.
    ``max_tasks_per_process``: how many tasks of this job one task process runs, one
    after another, before a fresh one takes over (1, the default: a fresh process per
    task); see "Reused task processes" in docs/architecture.md.
    ``max_memory_per_process``: a reused process whose RSS is above this (bytes, or a
    text such as ``"500MB"``) after a task is retired.
    Flow control (docs/flow.md), over all workers: ``concurrency`` (1: runs never
    overlap) and ``group_concurrency`` (per group) cap the tasks running at once;
    ``rate`` and ``group_rate`` (``"10/s"``, ``"30/m"``, ``"100/h"``) space starts evenly.
    """
    try:
        max_ms = parse_duration(max_duration)
    except DurationError as exc:
        raise JobDefinitionError(f"@job(max_duration=...): {exc}") from None
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise JobDefinitionError(f"@job(slots={slots!r}): slots must be an integer >= 1")
    if not isinstance(retries, int) or retries < 0:
        raise JobDefinitionError(f"@job(retries={retries!r}): retries must be an integer >= 0")
    try:
        backoff_ms = parse_duration(backoff)
    except DurationError as exc:
        raise JobDefinitionError(f"@job(backoff=...): {exc}") from None
    options = JobDefinition(
        max_duration_ms=max_ms,
        slots=slots,
        retries=retries,
        backoff_ms=backoff_ms,
        concurrency=_limit("concurrency", concurrency),
        group_concurrency=_limit("group_concurrency", group_concurrency),
        rate=_rate("rate", rate),
        group_rate=_rate("group_rate", group_rate),
    )
    reuse = (_tasks_per_process(max_tasks_per_process), parse_memory(max_memory_per_process))

    def mark(func: F) -> F:
        setattr(func, _ATTR, options)
        setattr(func, _REUSE_ATTR, reuse)
        return func

    return mark


def _limit(name: str, n: object) -> int:
    """A concurrency limit as stored (0: none), else raise naming the fix."""
    if n is None:
        return 0
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise JobDefinitionError(
            f"@job({name}={n!r}): must be an integer >= 1 (1: never two at once), or left out"
            " for no limit"
        )
    return n


_RATE_RE = re.compile(r"^([1-9][0-9]{0,6})/([smh])$")


def _rate(name: str, text: object) -> str:
    """A rate as stored ("" for none), else raise naming the fix."""
    if text is None:
        return ""
    if not isinstance(text, str) or not _RATE_RE.match(text):
        raise JobDefinitionError(
            f'@job({name}={text!r}): give starts per second, minute or hour, e.g. "10/s",'
            ' "30/m" or "100/h"'
        )
    return text


def _tasks_per_process(n: object) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise JobDefinitionError(
            f"@job(max_tasks_per_process={n!r}): must be an integer >= 1 (1: a fresh process"
            " per task)"
        )
    return n


def parse_memory(value: str | int | None) -> int:
    """Bytes of a memory size: an int, or a text such as ``"500MB"`` or ``"1GiB"``; None: 0."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    size = float(match[1]) * _MEMORY_UNITS[(match[2] or "B").upper()] if match else 0
    if size < 1:
        raise JobDefinitionError(
            f"@job(max_memory_per_process={value!r}): give a size above 0 such as"
            ' "500MB", "2GB" or "512MiB" (or a number of bytes)'
        )
    return int(size)


def validate_job_name(name: str) -> str:
    """Return ``name`` if it is a plain job name (a file stem), else raise."""
    if not JOB_NAME_RE.match(name):
        raise InvalidJobName(
            f"invalid job name {name!r}: use the file stem of a job script"
            " (letters, digits and '_', no '/', '..' or '.py')"
        )
    return name


def job_module_name(name: str) -> str:
    """The name a job file's module is imported under (in ``sys.modules``)."""
    return f"perseid_jobs_user_{name}"


def load_job_file(path: Path) -> JobSpec:
    """Import one job file and return its job; raise JobDefinitionError on any problem.

    Only imports it: the file's ``warm_up()``, if any, is the zygote's to run
    (:mod:`perseid_jobs.launch.warmup`), not a client's that reads the definition.
    """
    name = validate_job_name(path.stem)
    module_name = job_module_name(name)
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise JobDefinitionError(f"{path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except JobDefinitionError as exc:
        sys.modules.pop(module_name, None)
        raise JobDefinitionError(f"{path}: {exc}") from None
    except BaseException as exc:  # a job file may raise anything at import, even SystemExit
        sys.modules.pop(module_name, None)
        raise JobDefinitionError(f"{path}: import failed: {type(exc).__name__}: {exc}") from None
    found = [v for v in vars(module).values() if callable(v) and hasattr(v, _ATTR)]
    if len(found) != 1:
        raise JobDefinitionError(
            f"{path}: expected exactly one function decorated with @job, found {len(found)}"
        )
    func = found[0]
    tasks, memory = getattr(func, _REUSE_ATTR, (1, 0))
    return JobSpec(
        name=name,
        path=str(path),
        options=getattr(func, _ATTR),
        func=func,
        max_tasks_per_process=tasks,
        max_memory_bytes=memory,
    )


def load_jobs_dir(directory: Path) -> tuple[dict[str, JobSpec], list[str]]:
    """Load every job file of ``directory``: (jobs by name, one error line per bad file)."""
    if not directory.is_dir():
        raise JobDefinitionError(
            f"jobs directory {str(directory)!r} does not exist:"
            " pass --jobs DIR or set PERSEID_JOBS_DIR"
        )
    jobs: dict[str, JobSpec] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            spec = load_job_file(path)
        except (JobDefinitionError, InvalidJobName) as exc:
            errors.append(str(exc))
            continue
        jobs[spec.name] = spec
    return jobs, errors


def find_job_file(directory: Path, name: str) -> Path | None:
    """The file defining job ``name`` in ``directory``, if there is one."""
    path = directory / f"{validate_job_name(name)}.py"
    return path if path.is_file() else None
