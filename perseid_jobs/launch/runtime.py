"""What runs inside a task's process: the ``task`` object and the call of the job.

Exit codes are the contract with the worker: 0 completed, 100 cancelled,
anything else failed. The reason for a failure (the exception's type and
message) is returned to the caller so the process can hand it to the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, NoReturn

from ..core.jobfile import JobSpec
from .dataflow import BadResult, ProgressReporter, encode_result

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 100
MAX_REASON_CHARS = 2000


class TaskCancelled(SystemExit):
    """Raised by :meth:`TaskContext.cancel`; ends the task as cancelled (exit 100)."""

    def __init__(self) -> None:
        super().__init__(EXIT_CANCELLED)


class TaskContext:
    """The ``task`` argument a job function receives."""

    def __init__(
        self,
        *,
        id: str,
        job: str,
        args: dict[str, Any],
        metadata: dict[str, Any],
        logger: logging.Logger,
        attempt: int,
        parent_results: dict[str, Any] | None = None,
        progress: ProgressReporter | None = None,
    ) -> None:
        self.id = id
        self.job = job
        self.args = args
        self.metadata = metadata
        self.logger = logger
        self.attempt = attempt
        self.parent_results: dict[str, Any] = parent_results or {}  # parent id -> its result
        self.result: Any = None  # what the job function returned
        self._progress = progress or ProgressReporter(None)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the task is (0.0 to 1.0), with an optional short message.

        Coalesced: call it as often as you like; at most ~5 writes a second reach Redis,
        and the last value is written when the task ends.
        """
        self._progress.report(fraction, message)

    def cancel(self) -> NoReturn:
        """End this task now as cancelled (same as ``sys.exit(100)``)."""
        raise TaskCancelled()


def short_reason(exc: BaseException) -> str:
    """``Type: message`` of an exception, bounded in length."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _exit_code_of(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return EXIT_COMPLETED
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else EXIT_FAILED
    return EXIT_FAILED


def run_job(spec: JobSpec, task: TaskContext) -> tuple[int, str]:
    """Call the job's function; return (exit code, reason). Never raises."""
    code, reason, _ = run_job_ends(spec, task)
    return code, reason


def run_job_ends(spec: JobSpec, task: TaskContext) -> tuple[int, str, bool]:
    """(exit code, reason, whether the job asked its process to end: ``sys.exit``).

    ``task.cancel()`` ends the task, not the process (it raises a SystemExit of its own).
    """
    try:
        result = spec.func(task)
        if isinstance(result, Awaitable):
            # Imported here: asyncio would double the zygote every task is forked from.
            import asyncio

            result = asyncio.run(_await(result))
        task.result = result
        return EXIT_COMPLETED, "", False
    except TaskCancelled:
        return EXIT_CANCELLED, "", False
    except SystemExit as exc:
        code = _exit_code_of(exc)
        reason = "" if code in (EXIT_COMPLETED, EXIT_CANCELLED) else f"sys.exit({exc.code!r})"
        return code, reason, True
    except KeyboardInterrupt:
        return EXIT_FAILED, "interrupted (SIGINT)", False
    except BaseException as exc:
        task.logger.error(
            "task raised %s", type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__)
        )
        return EXIT_FAILED, short_reason(exc), False


async def _await(awaitable: Any) -> Any:
    return await awaitable


def end_of(
    task: TaskContext, code: int, reason: str, max_result_bytes: int
) -> tuple[int, str, str]:
    """(exit code, reason, result JSON) once the job returned: the last progress sent, and a
    result that cannot be stored fails the task with a reason saying why."""
    task._progress.flush()
    if code != EXIT_COMPLETED:
        return code, reason, ""
    try:
        return code, reason, encode_result(task.result, max_result_bytes)
    except BadResult as exc:
        task.logger.error("task failed: %s", exc)
        return EXIT_FAILED, str(exc), ""
