"""Starting and stopping the parts of a worker: its zygote, log shipper, heartbeat, metrics
server and wake-up channel; registering it (the loop itself is :meth:`Worker.loop`)."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .. import __version__
from ..logs.bucket import open_bucket
from ..logs.shipper import LogShipper
from ..logs.spool import DeadSpools
from ..store.connection import REDIS_ERRORS, TRANSIENT_ERRORS, Backoff, connect, redacted
from ..store.partitions import default_count, resolve
from . import recovery
from .fanout import PartitionedScripts
from .heartbeat import Heartbeat
from .jobscan import report_loaded
from .wake import WakeChannel
from .wake_pubsub import WakeSubscription
from .zygote_client import start_zygote

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("perseid_jobs.worker")


def start_parts(w: Worker) -> None:
    """Everything the loop needs, from the zygote to the wake-up channel; registers too."""
    if w.zygote is None:
        w.zygote = start_zygote(w.s.jobs_dir, w.s.logs_dir, wait=True)
    assert w.zygote.spool is not None
    w.spool = w.zygote.spool
    report_loaded(w.zygote.ready, w.s.jobs_dir)
    # Before registering: a bucket URL it cannot use ends the worker with nothing written.
    bucket = open_bucket(w.s.bucket_url, s3_endpoint_url=w.s.s3_endpoint_url)
    # The wake-up's connection before registering: a subscription is made before the
    # first claim, so no wake-up published after that claim is missed.
    w.wake_client = connect(w.s.redis_url, retries=0, socket_timeout=None, check=False)
    try:
        register(w)
    except TRANSIENT_ERRORS as exc:  # Redis went away since the ping: the loop retries
        log.warning("could not register yet (%s); retrying with backoff", exc)
        w.backoff.failed()
    w.shipper = LogShipper(
        w.spool.path,
        bucket,
        on_shipped=w.on_shipped,
        dead=DeadSpools(w.s.logs_dir, own=w.spool.path),
    )
    w.shipper.start()
    beat_timeout = max(0.5, min(w.s.heartbeat_s, w.s.lease_ttl_s / 3))
    w.heart_client = connect(w.s.redis_url, retries=0, socket_timeout=beat_timeout)
    w.heart = Heartbeat(
        PartitionedScripts(w.heart_client, w.parts, poll_every_s=w.s.heartbeat_s),
        w.lease,
        interval=w.s.heartbeat_s,
        on_renewed=w.on_renewed,
        on_lost=w.on_lost,
        on_cancels=w.on_cancels,
    )
    w.heart.start()
    if w.s.metrics_port is not None:
        from .metrics import WorkerMetrics  # prometheus_client: only when asked for
        from .probe import WorkerProbe

        w.metrics = WorkerMetrics(WorkerProbe(w))
        port = w.metrics.serve(w.s.metrics_port)
        log.info("metrics and health on :%d (/metrics, /healthz, /readyz)", port)
    if w.wake is None:  # not registered yet (Redis away): bind_partitions makes it later
        w.wake = _wake_for(w)
    log.info(
        "instance %s serving %d jobs with %d slots on %s (task processes: %s fork)",
        w.instance_id,
        len(w.zygote.ready.jobs),
        w.s.slots,
        redacted(w.s.redis_url),
        w.zygote.ready.fork,
    )


def _wake_for(w: Worker) -> WakeChannel | WakeSubscription:
    if len(w.parts) > 1:
        return WakeSubscription(w.wake_client, on_wake=w.scripts.woken)
    return WakeChannel(w.wake_client)


def bind_partitions(w: Worker) -> None:
    """Read the namespace's partition count from Redis (recording it at first use), and
    bind the worker's scripts, heartbeat and wake-up to its partitions."""
    requested = w.s.partitions
    parts = resolve(w.redis, w.s.namespace, requested, default_count(w.redis), record=True)
    w.parts, w.keys = parts, parts.keys[0]
    w.scripts = PartitionedScripts(w.redis, parts, poll_every_s=w.s.heartbeat_s)
    if w.heart:
        w.heart.scripts = PartitionedScripts(w.heart_client, parts, poll_every_s=w.s.heartbeat_s)
    if w.wake:
        w.wake.close()
    w.wake = _wake_for(w)
    w.partitions_bound = True


def register(w: Worker) -> None:
    """Announce the instance under its current id and publish its jobs."""
    assert w.zygote is not None
    if not w.partitions_bound:
        bind_partitions(w)
    if isinstance(w.wake, WakeSubscription):  # subscribed before the claims that follow
        w.wake.arm([keys.wake(w.instance_id) for keys in w.parts], w.s.heartbeat_s)
    jobs = {n: msgspec.json.encode(d).decode() for n, d in w.zygote.ready.jobs.items()}
    sent_at = time.monotonic()
    reply = w.scripts.register(
        w.instance_id,
        ttl_ms=int(w.s.lease_ttl_s * 1000),
        slots=w.s.slots,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        jobs=jobs,
    )
    w.clock.saw_now(reply.now)
    w.zygote.lease_until(w.lease.start(w.instance_id, sent_at))
    w.clock.ask()


def stop_parts(w: Worker) -> None:
    """Stop everything :func:`start_parts` started; deregister; record the last log URLs."""
    if w.metrics:
        w.metrics.close()
    if w.heart:
        w.heart.stop()
    if w.zygote:
        w.zygote.close()
    w.jobs.close()
    if w.registered:
        _try(lambda: recovery.deregister(w.scripts, w.instance_id, w.clock), "deregister")
    if w.shipper:
        w.shipper.stop(timeout=min(5.0 if w.cold else 30.0, w.s.drain_timeout_s))
    while w.log_urls and _try(lambda: w.log_urls.record(w.scripts, w.shipper), "record log URLs"):
        pass
    if w.wake:
        w.wake.close()
    if w.spool:
        w.spool.close()  # what was not uploaded stays for the next worker to adopt
    log.info("instance %s stopped", w.instance_id)


def _try(call: Any, what: str, attempts: int = 4) -> bool:
    """A best-effort call at shutdown: a few tries with backoff."""
    backoff = Backoff(cap=1.0)
    for _ in range(attempts):
        try:
            call()
            return True
        except REDIS_ERRORS as exc:
            log.warning("could not %s: %s", what, exc)
            time.sleep(backoff.failed())
    return False
