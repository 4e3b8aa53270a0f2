"""perseid-jobs: a distributed job scheduler for Python, coordinated through Redis."""

__version__ = "0.1.0"

from .core.jobfile import job

__all__ = [
    "AsyncClient",
    "Client",
    "DependencyEndedWarning",
    "PastStartWarning",
    "Task",
    "TaskStatus",
    "WaitTimeout",
    "__version__",
    "job",
]


def __getattr__(name: str) -> object:
    # The client pulls in redis; job scripts importing `job` should not pay for it.
    if name == "Client":
        from .api.client import Client

        return Client
    if name == "AsyncClient":
        from .api.aio import AsyncClient

        return AsyncClient
    if name in ("Task", "TaskStatus"):
        from .core import models

        return getattr(models, name)
    if name == "WaitTimeout":
        from .core.errors import WaitTimeout

        return WaitTimeout
    if name in ("DependencyEndedWarning", "PastStartWarning"):
        from .api import scheduling

        return getattr(scheduling, name)
    raise AttributeError(name)
