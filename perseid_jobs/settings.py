"""Worker settings: one Struct, filled by the command line (and its environment variables)."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from .connection import DEFAULT_REDIS_URL
from .keys import DEFAULT_NAMESPACE
from .procs import DEFAULT_LOGS_DIR

DEFAULT_BUCKET = "file://var/bucket"


class WorkerSettings(msgspec.Struct, kw_only=True):
    """Everything a worker instance needs to run."""

    slots: int
    jobs_dir: Path
    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    instance_id: str | None = None
    heartbeat_s: float = 5.0
    lease_ttl_s: float = 15.0
    reap_interval_s: float = 5.0
    drain_timeout_s: float = 60.0
    kill_grace_s: float = 5.0
    logs_dir: Path = Path(DEFAULT_LOGS_DIR)
    bucket_url: str = DEFAULT_BUCKET
    s3_endpoint_url: str | None = None
    max_log_bytes: int = 64 * 1024 * 1024
    metrics_port: int | None = None
    claim_batch: int = 64
    jobs_rescan_s: float = 2.0  # 0: job files are loaded again only on SIGHUP


def worker_argv(s: WorkerSettings) -> list[str]:
    """The ``perseid-jobs worker`` command line that runs an instance with settings ``s``."""
    argv = [
        sys.executable, "-m", "perseid_jobs", "worker",
        "--slots", str(s.slots), "--jobs", str(s.jobs_dir),
        "--redis", s.redis_url, "--namespace", s.namespace,
        "--heartbeat", f"{s.heartbeat_s}s", "--lease-ttl", f"{s.lease_ttl_s}s",
        "--reap-interval", f"{s.reap_interval_s}s", "--drain-timeout", f"{s.drain_timeout_s}s",
        "--kill-grace", f"{s.kill_grace_s}s", "--logs-dir", str(s.logs_dir),
        "--bucket", s.bucket_url, "--max-log-bytes", str(s.max_log_bytes),
        "--jobs-rescan", f"{s.jobs_rescan_s}s" if s.jobs_rescan_s else "0",
    ]  # fmt: skip
    if s.instance_id:
        argv += ["--instance-id", s.instance_id]
    if s.s3_endpoint_url:
        argv += ["--s3-endpoint-url", s.s3_endpoint_url]
    if s.metrics_port is not None:
        argv += ["--metrics-port", str(s.metrics_port)]
    return argv
