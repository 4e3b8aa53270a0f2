"""What an idle worker costs Redis, P=1 against P=12 on one redis-server (alternating).

Run: ``.venv/bin/python -m bench.idle_partitions``. Prints, per run, the commands per
second (those inside scripts included) and the Redis CPU per second of one idle worker
with a 1 s heartbeat and reap interval.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis

from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.worker.settings import WorkerSettings, worker_argv


def run(p: int, seconds: float = 12.0) -> tuple[float, float, float]:
    d = Path(tempfile.mkdtemp())
    srv = RedisServer(directory=d).start()
    r = redis.Redis.from_url(srv.url, decode_responses=True)
    s = WorkerSettings(
        slots=4,
        jobs_dir=Path(__file__).resolve().parent.parent / "jobs",
        redis_url=srv.url,
        namespace="idle",
        partitions=p,
        heartbeat_s=1,
        lease_ttl_s=3,
        reap_interval_s=1,
        logs_dir=d / "logs",
        bucket_url=f"file://{d}/b",
    )
    w = subprocess.Popen(worker_argv(s), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)  # registered and settled
    r.config_resetstat()
    t0 = time.monotonic()
    time.sleep(seconds)
    el = time.monotonic() - t0
    stats = r.info("commandstats")
    calls = sum(
        v["calls"] for k, v in stats.items() if k != "cmdstat_info" and k != "cmdstat_config"
    )
    usec = sum(v["usec"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))
    clients = int(r.info("clients")["connected_clients"]) - 1
    top = sorted(((v["calls"], k) for k, v in stats.items()), reverse=True)[:6]
    w.terminate()
    w.wait(20)
    srv.stop()
    print(
        f"P={p}: {calls / el:.1f} commands/s, {usec / el:.0f} us/s Redis CPU,"
        f" clients={clients}, top={top}"
    )
    return calls / el, usec / el, clients


if __name__ == "__main__":
    for count in (1, 12, 1, 12):
        run(count)
