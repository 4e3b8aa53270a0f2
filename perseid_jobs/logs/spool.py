"""Each worker instance's own spool under the logs directory, and the spools of gone ones.

Several workers may share one logs directory (one host, one ``--logs-dir``).
Each writes its tasks' logs into its own subdirectory, ``spool-<unique>``,
and holds an exclusive ``flock`` on that subdirectory's ``.lock`` file for its
whole life. The lock's open file is shared with the worker's zygote (passed
down at its start), so the lock is free only once the worker *and* its zygote,
the last writers of those logs, are gone. A starting worker takes over, and
uploads, the logs of spools whose lock it can take, keeps their lock while it
does, and removes each such spool once it is empty. It never touches a spool
whose lock is held: that worker is alive and its logs may still be written.

The logs directory's own ``*.log`` files (left by a version before spools) are
adopted the same way, under ``<logs dir>/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path

__all__ = ["DeadSpools", "Spool", "find_log"]

log = logging.getLogger(__name__)

PREFIX = "spool-"
"""Name prefix of the spool directories in a logs directory."""
LOCK = ".lock"
"""In a spool: the file whose flock says the spool's worker is alive."""
SPARE = ".spare"
"""In a spool: the log file of the zygote's spare task process, before it has a task."""
_NEW = ".new-"  # a spool being made: not a spool until renamed, so never adopted half-made


def _lock(path: Path, *, create: bool = False) -> int | None:
    """An fd holding an exclusive flock on ``path``; None if another process holds it."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return None  # gone meanwhile (another worker removed that spool)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Spool:
    """One worker instance's spool: its directory and the fd holding its lock."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        """Use :meth:`create`."""
        self.path = path
        self.lock_fd = lock_fd

    @classmethod
    def create(cls, logs_dir: Path) -> Spool:
        """A new spool in ``logs_dir``, locked before it gets its name (so never adopted)."""
        logs_dir = logs_dir.resolve()
        logs_dir.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0][:24]
        name = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        making = logs_dir / f"{_NEW}{name}"
        making.mkdir()
        fd = _lock(making / LOCK, create=True)
        if fd is None:  # a new file nobody else knows of: cannot happen short of a bug
            raise OSError(f"cannot lock the new spool {making}")
        path = logs_dir / f"{PREFIX}{name}"
        os.rename(making, path)
        return cls(path, fd)

    @property
    def logs_dir(self) -> Path:
        """The logs directory this spool is in."""
        return self.path.parent

    @property
    def spare_dir(self) -> Path:
        """Where the zygote's spare task process keeps its log until it has a task."""
        return self.path / SPARE

    def log_path(self, task_id: str) -> Path:
        """Where a task of this instance writes its log."""
        return self.path / f"{task_id}.log"

    def close(self) -> None:
        """Release the spool; its directory is removed if no log is left in it."""
        if self.lock_fd < 0:
            return
        _remove_if_empty(self.path)
        os.close(self.lock_fd)
        self.lock_fd = -1


class DeadSpools:
    """The spools of gone instances that this one took over to upload their logs."""

    def __init__(self, logs_dir: Path, own: Path | None = None) -> None:
        """Spools in ``logs_dir`` other than ``own`` (this instance's)."""
        self.logs_dir = logs_dir.resolve()
        self.own = own
        self._held: dict[Path, int] = {}  # adopted directory -> fd holding its lock
        self._mutex = threading.Lock()  # the shipper's thread and the worker's loop both call

    def adopt(self) -> list[Path]:
        """Lock every spool whose worker is gone; the logs found in them, to upload."""
        found: list[Path] = []
        candidates = [self.logs_dir, *sorted(self.logs_dir.glob(f"{PREFIX}*"))]
        for spool in candidates:
            if spool == self.own or spool in self._held or not spool.is_dir():
                continue
            fd = _lock(spool / LOCK, create=spool == self.logs_dir)
            if fd is None:
                continue  # its worker (or its zygote) is alive
            with self._mutex:
                self._held[spool] = fd
            logs = sorted(spool.glob("*.log"))
            if logs:
                log.info("adopting %d log(s) left in %s by a worker that is gone", len(logs), spool)
            found += logs
            self.release(spool)
        for making in self.logs_dir.glob(f"{_NEW}*"):  # a worker died making its spool
            fd = _lock(making / LOCK)
            if fd is not None:
                shutil.rmtree(making, ignore_errors=True)
                os.close(fd)
        return found

    def release(self, spool: Path) -> None:
        """Once an adopted spool holds no log: remove it (not the logs dir) and unlock it."""
        with self._mutex:
            fd = self._held.get(spool)
            if fd is None or any(spool.glob("*.log")):
                return
            del self._held[spool]
            if spool != self.logs_dir:
                _remove_if_empty(spool)
            os.close(fd)

    def held(self) -> list[Path]:
        """The adopted spools not yet emptied."""
        with self._mutex:
            return list(self._held)


def _remove_if_empty(spool: Path) -> None:
    """Remove a spool directory (its spare's log and lock file too) if no task log is in it."""
    if any(spool.glob("*.log")):
        return
    shutil.rmtree(spool / SPARE, ignore_errors=True)
    with contextlib.suppress(OSError):
        (spool / LOCK).unlink()
        spool.rmdir()


def find_log(logs_dir: Path, task_id: str) -> Path | None:
    """The spooled log of ``task_id`` in any spool of ``logs_dir`` (newest if several)."""
    name = f"{task_id}.log"
    paths = [logs_dir / name, *logs_dir.glob(f"{PREFIX}*/{name}")]
    present = []
    for path in paths:
        with contextlib.suppress(OSError):
            present.append((path.stat().st_mtime, path))
    return max(present)[1] if present else None
