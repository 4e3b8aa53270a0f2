"""Worker settings: one table of them (:data:`SETTINGS`), and the Struct it fills.

Each row names a setting's option, environment variable, default, parser and
check. The ``worker`` command's options are made from it (cli_worker.py), the
early zygote start reads its directories through it (zygote_client.start_zygote_early),
:class:`WorkerSettings` takes its defaults and checks from it, whether it is
built by the command line or in Python, and :func:`worker_argv` writes a
command line from it; tests/test_settings.py checks the Helm chart's and the
deployment docs' environment variables against it.

Kept light (no Redis, no Typer): the console script reads it before it has
imported the command line.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..core.durations import DurationError, parse_duration
from ..core.errors import ConfigError
from ..launch.protocol import DEFAULT_MAX_RESULT_BYTES
from ..logs.taskoutput import DEFAULT_MAX_LOG_BYTES
from ..store.keys import DEFAULT_NAMESPACE, validate_namespace
from ..store.partitions import check_count

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_LOGS_DIR = "var/logs"
"""Where a worker keeps task logs until they are uploaded, unless told otherwise."""
DEFAULT_BUCKET = "file://var/bucket"
MIN_RESCAN_S = 0.1


def seconds(value: str, option: str) -> float:
    """A duration option (``5s``, ``1m``, ``0.2``) in seconds, or a one-line error."""
    try:
        return parse_duration(value) / 1000
    except DurationError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def rescan_seconds(value: str, option: str = "--jobs-rescan") -> float:
    """``--jobs-rescan``: a duration, or 0 (job files reloaded on SIGHUP only)."""
    with contextlib.suppress(ValueError):
        if float(value.strip().removesuffix("s")) == 0:
            return 0.0
    return seconds(value, option)


def duration_text(value: float) -> str:
    """Seconds as the command line takes them: ``5s``, ``0.2s`` (repr: no digit lost)."""
    return repr(float(value)).removesuffix(".0") + "s"


def _same(value: Any, option: str) -> Any:
    return value


def _resolved(value: Path, option: str) -> Path:
    return value.resolve()


def _no_check(value: Any, name: str, shown: str) -> None:
    pass


def _at_least_one_slot(value: int, name: str, shown: str) -> None:
    if value < 1:
        raise ConfigError(f"{name} {shown}: an instance must offer at least 1 slot")


def _existing_dir(value: Path, name: str, shown: str) -> None:
    if not Path(value).is_dir():
        fix = f"pass {name} DIR" if name.startswith("-") else f"give {name} an existing directory"
        raise ConfigError(f"jobs directory {shown!r} does not exist: {fix}")


def _namespace(value: str, name: str, shown: str) -> None:
    validate_namespace(value)


def _partition_count(value: Any, option: str) -> int | None:
    return check_count(value)


def _partitions(value: int, name: str, shown: str) -> None:
    check_count(value)


def _duration(value: float, name: str, shown: str) -> None:
    # The command line's parser refuses these already; a Struct built in Python is checked here.
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} {shown}: a duration is a finite number of seconds, >= 0")


def _rescan(value: float, name: str, shown: str) -> None:
    _duration(value, name, shown)
    if 0 < value < MIN_RESCAN_S:
        raise ConfigError(
            f"{name} {shown}: rescan at most every {MIN_RESCAN_S:g}s (e.g. 2s),"
            " or 0 to reload job files on SIGHUP only"
        )


@dataclass(frozen=True)
class Setting:
    """One worker setting: how it is given, its default, how it is read and checked."""

    field: str  # the WorkerSettings attribute (and the worker command's parameter)
    option: str
    env: str
    metavar: str
    help: str
    default: Any = None  # as WorkerSettings holds it; None: unset (off, or a random id)
    cli_type: Any = str  # what Click makes of the text, before `parse`
    parse: Callable[[Any, str], Any] = _same  # (Click's value, option) -> the setting's value
    text: Callable[[Any], str] = str  # the setting's value -> its command-line text
    check: Callable[[Any, str, str], None] = _no_check  # (value, name, as shown) -> or raise
    required: bool = False
    in_struct: bool = True  # False: the command's own (--log-level), not a WorkerSettings field

    @property
    def cli_default(self) -> Any:
        """The default as the option takes it (``5s`` for a duration of 5.0)."""
        if self.default is None or self.cli_type is not str:
            return self.default
        return self.text(self.default)


def _duration_setting(
    field: str, option: str, env: str, help: str, default: float, **kw: Any
) -> Setting:
    kw.setdefault("parse", seconds)
    kw.setdefault("check", _duration)
    return Setting(
        field, option, env, "DURATION", help, default, text=duration_text, **kw
    )  # fmt: skip


SETTINGS: tuple[Setting, ...] = (
    Setting("slots", "--slots", "PERSEID_SLOTS", "N", "Slots this instance offers.",
            cli_type=int, check=_at_least_one_slot, required=True),
    Setting("jobs_dir", "--jobs", "PERSEID_JOBS_DIR", "DIR", "Directory of job scripts.",
            Path("jobs"), Path, _resolved, check=_existing_dir),
    Setting("redis_url", "--redis", "PERSEID_REDIS_URL", "URL",
            "Redis URL: redis://, rediss://, redis+sentinel://, redis+cluster://.",
            DEFAULT_REDIS_URL),
    Setting("namespace", "--namespace", "PERSEID_NAMESPACE", "NAME", "Key namespace.",
            DEFAULT_NAMESPACE, check=_namespace),
    Setting("partitions", "--partitions", "PERSEID_PARTITIONS", "N",
            "Partitions of the namespace: recorded in Redis at its first use, read from there"
            " afterwards (default: 1; on a Redis Cluster, 4 per primary).",
            parse=_partition_count, check=_partitions),
    Setting("instance_id", "--instance-id", "PERSEID_INSTANCE_ID", "ID",
            "This instance's id (default: a new random one at each start)."),
    _duration_setting("heartbeat_s", "--heartbeat", "PERSEID_HEARTBEAT",
                      "How often the lease is renewed.", 5.0),
    _duration_setting("lease_ttl_s", "--lease-ttl", "PERSEID_LEASE_TTL",
                      "How long a lease lasts unrenewed; then the instance counts as dead"
                      " (longer than --heartbeat, e.g. 3x).", 15.0),
    _duration_setting("reap_interval_s", "--reap-interval", "PERSEID_REAP_INTERVAL",
                      "How often this instance fails or retries the tasks of dead instances.",
                      5.0),
    _duration_setting("drain_timeout_s", "--drain-timeout", "PERSEID_DRAIN_TIMEOUT",
                      "On SIGTERM/SIGINT, how long running tasks may finish before they are"
                      " killed.", 60.0),
    _duration_setting("kill_grace_s", "--kill-grace", "PERSEID_KILL_GRACE",
                      "Between SIGTERM and SIGKILL when a task is stopped (timeout, cancel).",
                      5.0),
    Setting("logs_dir", "--logs-dir", "PERSEID_LOGS_DIR", "DIR", "Local spool of task logs.",
            Path(DEFAULT_LOGS_DIR), Path, _resolved),
    Setting("bucket_url", "--bucket", "PERSEID_BUCKET", "URL",
            "Where task logs are kept: file:///path or s3://bucket/prefix.", DEFAULT_BUCKET),
    Setting("s3_endpoint_url", "--s3-endpoint-url", "AWS_ENDPOINT_URL", "URL",
            "S3 API endpoint (MinIO and other S3-compatible stores)."),
    Setting("max_log_bytes", "--max-log-bytes", "PERSEID_MAX_LOG_BYTES", "BYTES",
            "A task's log is cut (with a note) beyond this size.", DEFAULT_MAX_LOG_BYTES, int),
    Setting("max_result_bytes", "--max-result-bytes", "PERSEID_MAX_RESULT_BYTES", "BYTES",
            "A task whose result is larger, as JSON, fails saying so.", DEFAULT_MAX_RESULT_BYTES,
            int),
    Setting("metrics_port", "--metrics-port", "PERSEID_METRICS_PORT", "PORT",
            "Serve Prometheus /metrics, /healthz and /readyz on this port (default: off).",
            cli_type=int),
    Setting("log_level", "--log-level", "PERSEID_LOG_LEVEL", "LEVEL",
            "The worker's own log on stderr: DEBUG, INFO, WARNING or ERROR.", "INFO",
            in_struct=False),
    _duration_setting("jobs_rescan_s", "--jobs-rescan", "PERSEID_JOBS_RESCAN",
                      "How often to look for added, changed or removed job files (0: only on"
                      " SIGHUP).", 2.0, parse=rescan_seconds, check=_rescan),
)  # fmt: skip
"""Every setting of the ``worker`` command, in the order its errors are reported."""

BY_FIELD: Mapping[str, Setting] = {s.field: s for s in SETTINGS}


def default(field: str) -> Any:
    """The default of setting ``field`` (for the Struct's fields below)."""
    return BY_FIELD[field].default


def _check_pair(lease_ttl_s: float, heartbeat_s: float, lease: str, heartbeat: str) -> None:
    if lease_ttl_s <= heartbeat_s:
        raise ConfigError(f"{lease} must be longer than {heartbeat} (e.g. 3x)")


class WorkerSettings(msgspec.Struct, kw_only=True):
    """Everything a worker instance needs to run (checked when built: see :data:`SETTINGS`)."""

    slots: int
    jobs_dir: Path
    redis_url: str = default("redis_url")
    namespace: str = default("namespace")
    partitions: int | None = default("partitions")  # None: as recorded, else the default
    instance_id: str | None = default("instance_id")
    heartbeat_s: float = default("heartbeat_s")
    lease_ttl_s: float = default("lease_ttl_s")
    reap_interval_s: float = default("reap_interval_s")
    drain_timeout_s: float = default("drain_timeout_s")
    kill_grace_s: float = default("kill_grace_s")
    logs_dir: Path = default("logs_dir")
    bucket_url: str = default("bucket_url")
    s3_endpoint_url: str | None = default("s3_endpoint_url")
    max_log_bytes: int = default("max_log_bytes")
    max_result_bytes: int = default("max_result_bytes")
    metrics_port: int | None = default("metrics_port")
    claim_batch: int = 64  # not an option: how many due tasks one claim call may take
    jobs_rescan_s: float = default("jobs_rescan_s")  # 0: job files are loaded again only on SIGHUP

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.field, None) if s.in_struct else None
            if value is not None:
                s.check(value, s.field, str(value))
        _check_pair(self.lease_ttl_s, self.heartbeat_s, "lease_ttl_s", "heartbeat_s")


def settings_from_cli(values: Mapping[str, Any]) -> WorkerSettings:
    """The settings the ``worker`` command's options give (errors name the options)."""
    fields: dict[str, Any] = {}
    for s in SETTINGS:
        given_value = values[s.field]
        if given_value is not None and s.in_struct:
            fields[s.field] = value = s.parse(given_value, s.option)
            s.check(value, s.option, str(given_value))
    heartbeat, lease = BY_FIELD["heartbeat_s"], BY_FIELD["lease_ttl_s"]
    _check_pair(fields[lease.field], fields[heartbeat.field], lease.option, heartbeat.option)
    return WorkerSettings(**fields)


def given(args: list[str], field: str) -> str | None:
    """What a ``worker ARGS`` command line gives setting ``field``, read as the command reads it:
    its option's last value (``--opt V`` or ``--opt=V``), else its environment variable, else
    its default (None: none)."""
    s, found = BY_FIELD[field], None
    for i, arg in enumerate(args):
        if arg == s.option and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(s.option + "="):
            found = arg[len(s.option) + 1 :]
    default = None if s.cli_default is None else str(s.cli_default)
    return found or os.environ.get(s.env) or default


def worker_argv(s: WorkerSettings) -> list[str]:
    """The ``perseid-jobs worker`` command line that runs an instance with settings ``s``."""
    argv = [sys.executable, "-m", "perseid_jobs", "worker"]
    for setting in SETTINGS:
        value = getattr(s, setting.field, None) if setting.in_struct else None
        if value is not None and value != "":
            argv += [setting.option, setting.text(value)]
    return argv
