"""TLS (``rediss://``) and ACL users (``redis://user:password@``), end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.redisproc import free_port

from ..conftest import JOBS, ROOT
from .conftest import Fleet


def test_worker_and_client_work_over_tls(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls_port = free_port()
    redis_servers(extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ])  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    client = Client.from_url(url, namespace="tls", jobs_dir=JOBS)
    assert client.redis.connection_pool.connection_class is redis.SSLConnection
    fleet = Fleet(url, "tls", tmp_path)
    fleets.append(fleet)
    fleet.start(2)
    task = client.schedule("hello", {"name": "over TLS"})
    assert client.wait(task.id, 15).status is TaskStatus.COMPLETED


def test_acl_user_limited_to_the_namespace_keys_runs_everything(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any
) -> None:
    server = redis_servers()
    admin = redis.Redis(port=server.port)
    # Only the keys of namespace "acl": any key a script touched outside it would fail.
    admin.acl_setuser(
        "perseid", enabled=True, passwords=["+s3cret"], keys=["{acl}:*"],
        commands=["+@all", "-@dangerous"],
    )  # fmt: skip
    url = f"redis://perseid:s3cret@127.0.0.1:{server.port}/0"
    client = Client.from_url(url, namespace="acl", jobs_dir=JOBS)
    fleet = Fleet(url, "acl", tmp_path)
    fleets.append(fleet)
    fleet.start(2)
    task = client.schedule("hello", {"name": "ACL"})
    assert client.wait(task.id, 15).status is TaskStatus.COMPLETED
    assert admin.acl_log() == []  # nothing was denied on the way

    wrong = f"redis://perseid:nope@127.0.0.1:{server.port}/0"
    cli = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", "show", task.id, "--redis", wrong],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert cli.returncode == 3
    assert cli.stderr.count("\n") == 1 and "refused the credentials" in cli.stderr
    assert "nope" not in cli.stderr and "***" in cli.stderr
