"""Prometheus metrics and the health endpoints of a worker instance.

``perseid-jobs worker --metrics-port 9464`` serves, on one port:
``/metrics`` (Prometheus text format), ``/healthz`` (the process is alive and
its loop turns) and ``/readyz`` (registered, lease fresh, Redis reachable).

Labels name the job ``job_name``: Prometheus reserves ``job`` for the scrape
target.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


class WorkerState(Protocol):
    """What the metrics read from the worker at scrape time."""

    def slots_total(self) -> int: ...
    def slots_in_use(self) -> int: ...
    def tasks_running(self) -> int: ...
    def logs_pending(self) -> int: ...
    def log_upload_failures(self) -> int: ...
    def heartbeat_failures(self) -> int: ...
    def backlog(self) -> tuple[int, float]: ...  # (due now, age in s of the oldest due)
    def flow_limits(self) -> list[tuple[str, str, int, int]]: ...  # job, limit, set, in use
    def held(self) -> dict[str, int]: ...  # pending tasks held back, by reason
    def loop_age(self) -> float: ...  # seconds since the loop last turned
    def readiness(self) -> tuple[bool, str]: ...
    def progress(self) -> list[tuple[str, str, float]]: ...  # job, task id, fraction (running)


class _StateCollector(Collector):
    """Gauges read from the worker at scrape time."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state
        yield GaugeMetricFamily(
            "perseid_jobs_slots_total", "Slots this instance offers.", value=s.slots_total()
        )
        yield GaugeMetricFamily(
            "perseid_jobs_slots_used", "Slots taken by running tasks.", value=s.slots_in_use()
        )
        yield GaugeMetricFamily(
            "perseid_jobs_tasks_running", "Tasks running on this instance.", value=s.tasks_running()
        )
        yield GaugeMetricFamily(
            "perseid_jobs_log_uploads_pending",
            "Task logs waiting in the local spool.",
            value=s.logs_pending(),
        )
        yield GaugeMetricFamily(
            "perseid_jobs_log_upload_failures",
            "Failed log upload attempts since start.",
            value=s.log_upload_failures(),
        )
        yield GaugeMetricFamily(
            "perseid_jobs_heartbeat_failures",
            "Failed lease renewals since start.",
            value=s.heartbeat_failures(),
        )
        due, age = s.backlog()
        yield GaugeMetricFamily(
            "perseid_jobs_due_backlog", "Tasks due now and not yet claimed.", value=due
        )
        yield GaugeMetricFamily(
            "perseid_jobs_due_oldest_age_seconds",
            "How long the oldest due task has waited.",
            value=age,
        )
        yield from _flow_families(s)
        progress = GaugeMetricFamily(
            "perseid_jobs_task_progress",
            "The last progress (0 to 1) of each task this instance runs that reported one.",
            labels=["job_name", "task_id"],
        )
        for job, task_id, fraction in s.progress():
            progress.add_metric([job, task_id], fraction)
        yield progress


def _flow_families(s: WorkerState) -> Iterator[GaugeMetricFamily]:
    """Flow control: each limit configured and in use, and what is held back, by reason."""
    configured = GaugeMetricFamily(
        "perseid_jobs_limit", "A job's limit, as configured.", labels=["job_name", "limit"]
    )
    in_use = GaugeMetricFamily(
        "perseid_jobs_limit_in_use",
        "Tasks running under a job's limit, over all workers.",
        labels=["job_name", "limit"],
    )
    for job, limit, value, running in s.flow_limits():
        configured.add_metric([job, limit], value)
        in_use.add_metric([job, limit], running)
    held = GaugeMetricFamily(
        "perseid_jobs_tasks_held",
        "Pending tasks a pause or a full limit holds back (namespace-wide).",
        labels=["reason"],
    )
    for reason, n in s.held().items():
        held.add_metric([reason], n)
    yield from (configured, in_use, held)


class WorkerMetrics:
    """The instruments a worker updates, on their own registry."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "perseid_jobs_tasks",
            "Tasks by job and what happened to them "
            "(claimed, completed, failed, cancelled, reaped).",
            ["job_name", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "perseid_jobs_task_duration_seconds",
            "Run time of finished tasks.",
            ["job_name"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lag = Histogram(
            "perseid_jobs_task_start_lag_seconds",
            "From due time to claim, in Redis time.",
            ["job_name"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.progress = Counter(
            "perseid_jobs_task_progress_updates",
            "Progress values written for the running tasks (coalesced: docs/dataflow.md).",
            ["job_name"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))
        self._server: WSGIServer | None = None

    def claimed(self, job: str, lag_s: float) -> None:
        """A task was claimed ``lag_s`` seconds after it was due."""
        self.tasks.labels(job, "claimed").inc()
        self.lag.labels(job).observe(max(0.0, lag_s))

    def finished(self, job: str, status: str, duration_s: float) -> None:
        """A task this instance ran ended."""
        self.tasks.labels(job, status).inc()
        self.duration.labels(job).observe(max(0.0, duration_s))

    def progressed(self, job: str) -> None:
        """A running task's progress was written."""
        self.progress.labels(job).inc()

    def reaped(self, jobs: Iterable[str]) -> None:
        """The reaper failed these tasks (of any instance)."""
        for job in jobs:
            self.tasks.labels(job, "reaped").inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics, /healthz and /readyz on a daemon thread; return the port."""
        metrics_app = make_wsgi_app(self.registry)
        health_limit = 60.0

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/healthz":
                age = self.state.loop_age()
                ok = age < health_limit
                return _text(start, ok, f"loop turned {age:.1f}s ago")
            if path == "/readyz":
                ok, why = self.state.readiness()
                return _text(start, ok, why)
            return metrics_app(environ, start)  # type: ignore[no-any-return]

        self._server = make_server(host, port, app, handler_class=_QuietHandler)
        thread = threading.Thread(
            target=self._server.serve_forever, name="perseid-metrics", daemon=True
        )
        thread.start()
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _text(start: Callable[..., Any], ok: bool, body: str) -> list[bytes]:
    start("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
    return [(("ok: " if ok else "not ready: ") + body + "\n").encode()]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass
