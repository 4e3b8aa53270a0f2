"""Job files added, changed or removed while a worker runs: picked up without a restart.

Every ``--jobs-rescan`` seconds (and at once on SIGHUP) the worker compares
the jobs directory's ``*.py`` files (name, size, mtime, inode) with what it
saw last. On a change (always on SIGHUP) it starts a fresh zygote, which
imports the jobs again, while the current one goes on starting tasks. Once
the fresh one is up, new tasks go to it and the old one is *retired*: it
starts nothing more, its running tasks run on undisturbed (their exits and
output reach the worker as before, its lease deadline is still renewed), and
it exits when the last one has ended. Then the worker republishes its catalog
(``lua/republish.lua``): the jobs it offers now, the definitions of changed
ones; a removed job leaves the catalog if no other live instance offers it.

A zygote a rescan started that fails (the jobs directory is gone) or hangs at
import is given up; the current one goes on, and the next change tries again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..launch.protocol import Ready
from ..store.script_io import LeaseLapsed
from .zygote_client import ZygoteClient, ZygoteFailed

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("perseid_jobs.worker")

LOAD_TIMEOUT_S = 60.0
"""How long a fresh zygote may take to import the jobs before it is given up."""

Fingerprint = frozenset[tuple[str, int, int, int]]


def fingerprint(directory: Path) -> Fingerprint:
    """What tells that a job file changed: each ``*.py`` file's name, size, mtime and inode."""
    found = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    try:
                        st = entry.stat()
                    except OSError:  # removed while listed
                        continue
                    found.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:  # gone or unreadable: loading it will say why
        pass
    return frozenset(found)


def report_loaded(ready: Ready, jobs_dir: Path) -> None:
    """Log what a zygote could not load, and that it serves nothing, if so."""
    for line in ready.errors:
        log.error("job file skipped: %s", line)
    if not ready.jobs:
        log.warning(
            "no jobs in %s: this instance serves none; point --jobs (or PERSEID_JOBS_DIR)"
            " at a directory of job files",
            jobs_dir,
        )


class JobsWatch:
    """A worker's watch on its jobs directory, and the zygotes it retired."""

    def __init__(self, jobs_dir: Path, interval_s: float) -> None:
        """``interval_s``: seconds between rescans (0: only on SIGHUP)."""
        self.jobs_dir = jobs_dir
        self.interval_s = interval_s
        self.seen = fingerprint(jobs_dir)
        now = time.monotonic()
        self.next_scan: float | None = now + interval_s if interval_s > 0 else None
        self.hup = False  # set by the SIGHUP handler
        self.loading: ZygoteClient | None = None
        self.load_deadline = 0.0
        self.retired: list[ZygoteClient] = []
        self.publish_due = False

    # -- deciding to reload ----------------------------------------------------------------
    def step(self, w: Worker) -> None:
        """Rescan if it is time (or SIGHUP said so); start a fresh zygote on a change."""
        now = time.monotonic()
        if self.loading is not None and now >= self.load_deadline:
            log.error(
                "the reloaded jobs did not load within %gs: kept the current ones", LOAD_TIMEOUT_S
            )
            self._give_up()
        forced, self.hup = self.hup, False
        if not forced and (self.next_scan is None or now < self.next_scan):
            return
        if self.interval_s > 0:
            self.next_scan = now + self.interval_s
        seen = fingerprint(self.jobs_dir)
        if seen == self.seen and not forced:
            return
        self.seen = seen
        if self.loading is not None:
            self._give_up()  # superseded: what it loaded may be stale already
        assert w.zygote is not None
        log.info(
            "%s: loading the jobs of %s again",
            "SIGHUP" if forced else "job files changed",
            self.jobs_dir,
        )
        self.loading = w.zygote.sibling()
        self.load_deadline = now + LOAD_TIMEOUT_S

    def _give_up(self) -> None:
        if self.loading is not None:
            # Killed, not asked: while it imports it reads no request, and the loop must
            # not wait for it. It runs no task yet; a spare of its own dies with it.
            self.loading.proc.kill()
            self.loading.close()
            self.loading = None

    def wake_times(self) -> list[float]:
        """When :meth:`step` has something to do (``time.monotonic()`` seconds)."""
        when = [] if self.next_scan is None else [self.next_scan]
        if self.loading is not None:
            when.append(self.load_deadline)
        return when

    # -- the zygotes -----------------------------------------------------------------------
    def fds(self) -> list[Any]:
        """What the worker's select waits on for this: the loading and the retired zygotes."""
        return ([self.loading] if self.loading is not None else []) + self.retired

    def on_readable(self, w: Worker, readable: list[Any]) -> None:
        """Act on what the loading and the retired zygotes said."""
        for old in [z for z in self.retired if z in readable]:
            with contextlib.suppress(ZygoteFailed):  # exited: it reported every exit before
                w.handle_zygote(old)
            if old.ended:
                self.retired.remove(old)
                old.close()
        if self.loading is not None and self.loading in readable:
            try:
                ready = self.loading.poll_ready()
            except ZygoteFailed as exc:
                log.error("the reloaded jobs could not be loaded (%s): kept the current ones", exc)
                self.loading = None
                return
            if ready is not None:
                self._swap(w, self.loading, ready)

    def _swap(self, w: Worker, fresh: ZygoteClient, ready: Ready) -> None:
        """New tasks go to ``fresh``; the current zygote is retired."""
        assert w.zygote is not None
        old, self.loading = w.zygote, None
        w.zygote = fresh  # from here the heartbeat renews its lease too
        if w.lease.deadline is not None:
            fresh.lease_until(w.lease.deadline)
        old.retire()
        self.retired.append(old)
        before = old.ready.jobs
        added = sorted(ready.jobs.keys() - before.keys())
        removed = sorted(before.keys() - ready.jobs.keys())
        changed = sorted(n for n in ready.jobs.keys() & before.keys() if ready.jobs[n] != before[n])
        log.info(
            "jobs reloaded: %d served (added: %s; changed: %s; removed: %s); tasks running"
            " from before finish as they are",
            len(ready.jobs),
            ", ".join(added) or "none",
            ", ".join(changed) or "none",
            ", ".join(removed) or "none",
        )
        report_loaded(ready, self.jobs_dir)
        self.publish_due = True

    def zygotes(self, current: ZygoteClient | None) -> tuple[ZygoteClient, ...]:
        """Every zygote whose tasks may run: the current one and the retired ones."""
        return (*([current] if current is not None else []), *self.retired)

    def collect(self, w: Worker, timeout: float) -> None:
        """Wait (bounded) until every running task, on any zygote, reported its exit."""
        deadline = time.monotonic() + timeout
        while w.running and time.monotonic() < deadline:
            fds: list[Any] = [*self.zygotes(w.zygote)]
            r, _, _ = select.select(fds, [], [], 0.1)
            if w.zygote in r:
                w.handle_zygote()
            self.on_readable(w, r)

    # -- the catalog -----------------------------------------------------------------------
    def publish(self, w: Worker) -> None:
        """Republish what this instance offers (raises on a Redis error: the loop retries)."""
        assert w.zygote is not None
        jobs = {n: msgspec.json.encode(d).decode() for n, d in w.zygote.ready.jobs.items()}
        reply = w.scripts.republish(w.instance_id, jobs)
        self.publish_due = False
        if isinstance(reply, LeaseLapsed):
            return  # it registers again, with these jobs
        w.clock.saw_now(reply.now)
        if reply.dropped:
            log.info(
                "no live instance offers %s any more: left the catalog", ", ".join(reply.dropped)
            )
        w.clock.ask()  # tasks of an added job may be due already

    def close(self) -> None:
        """At shutdown: stop the loading zygote and the retired ones (they kill their tasks)."""
        self._give_up()
        for old in self.retired:
            old.close()
        self.retired.clear()
