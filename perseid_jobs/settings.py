"""Worker settings: one Struct, filled by the command line (and its environment variables)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from .connection import DEFAULT_REDIS_URL
from .keys import DEFAULT_NAMESPACE

DEFAULT_LOGS_DIR = "var/logs"
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
