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

F = TypeVar("F", bound=Callable[..., Any])


class JobSpec(msgspec.Struct, frozen=True):
    """A loaded job: what ``@job(...)`` declared and the function to call."""

    name: str
    path: str
    options: JobDefinition
    func: Callable[..., Any]

    def definition(self) -> JobDefinition:
        """The catalog entry a worker publishes for this job."""
        return self.options


def job(
    *,
    max_duration: str | int | float,
    slots: int = 1,
    retries: int = 0,
    backoff: str | int | float = "1s",
) -> Callable[[F], F]:
    """Mark the function a job file runs.

    ``max_duration`` is seconds or a duration text (``"90s"``, ``"10m"``,
    ``"2h"``); past it the task's process group is killed and the task fails.
    ``slots`` is the weight the task takes from its instance's ``--slots``.
    ``retries``: how many times a failed task runs again (none by default);
    attempt ``n`` waits ``backoff * 2**(n-1)`` after the failure before it is due.
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
        max_duration_ms=max_ms, slots=slots, retries=retries, backoff_ms=backoff_ms
    )

    def mark(func: F) -> F:
        setattr(func, _ATTR, options)
        return func

    return mark


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
    (:mod:`perseid_jobs.warmup`), not a client's that reads the definition.
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
    return JobSpec(name=name, path=str(path), options=getattr(func, _ATTR), func=func)


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
