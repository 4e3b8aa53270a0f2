"""Redis topologies the chaos tests build from ``redis-server`` processes.

Each test starts its own: a single server with an append-only file, a primary with
a replica and a sentinel, a three-primary cluster. Nothing here touches the shared
6379.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from perseid_jobs.store.redisproc import RedisServer, cluster_port


def wait_ping(port: int, timeout: float = 10.0) -> None:
    """Wait until the server on ``port`` answers PING."""
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            client.close()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SentinelSetup:
    """A primary, one replica and one sentinel (quorum 1) watching them as ``master``."""

    MASTER = "perseid"

    def __init__(self, base: Path, down_after_ms: int = 1000, link: Any = None) -> None:
        self.base = base
        self.link = link  # makes the replication link: (primary port) -> port to replicate from
        self.primary = RedisServer(directory=self._dir("primary"))
        self.replica = RedisServer(directory=self._dir("replica"))
        self.sentinel_port = RedisServer(directory=self._dir("sentinel")).port
        self.down_after_ms = down_after_ms
        self.sentinel: subprocess.Popen[bytes] | None = None

    def _dir(self, name: str) -> Path:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def url(self) -> str:
        """The URL workers and clients use."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.MASTER}"

    def start(self) -> SentinelSetup:
        """Start the three processes; returns once the sentinel knows the replica."""
        fast_sync = ["--repl-diskless-sync-delay", "0"]  # the default waits 5 s to sync
        self.primary.extra = fast_sync
        self.primary.start()
        upstream = self.link(self.primary.port) if self.link else self.primary.port
        self.replica.extra = [*fast_sync, "--replicaof", "127.0.0.1", str(upstream)]
        self.replica.start()
        replica = redis.Redis(port=self.replica.port, decode_responses=True)
        deadline = time.monotonic() + 15
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica never synced with the primary")
            time.sleep(0.05)
        replica.close()
        conf = self.base / "sentinel" / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {conf.parent}\n"
            f"logfile {conf.parent / 'sentinel.log'}\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}\n"
            # Long: it is also how soon the sentinel "fixes" a replica that replicates
            # through a proxy (the replication loss test cuts that link).
            f"sentinel failover-timeout {self.MASTER} 60000\n"
            f"sentinel parallel-syncs {self.MASTER} 1\n"
        )
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        assert binary is not None
        self.sentinel = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        wait_ping(self.sentinel_port)
        s = redis.Redis(port=self.sentinel_port, decode_responses=True)
        deadline = time.monotonic() + 15
        while int(s.sentinel_master(self.MASTER).get("num-slaves", 0)) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel never saw the replica")
            time.sleep(0.1)
        s.close()
        return self

    def master_port(self) -> int:
        """The port the sentinel currently names as primary."""
        s = redis.Redis(port=self.sentinel_port, decode_responses=True)
        try:
            return int(s.sentinel_get_master_addr_by_name(self.MASTER)[1])
        finally:
            s.close()

    def stop(self) -> None:
        """Stop everything."""
        if self.sentinel is not None:
            self.sentinel.terminate()
            self.sentinel.wait(10)
        self.primary.stop()
        self.replica.stop()


class ClusterSetup:
    """Three primaries (by default), made with ``redis-cli --cluster create``."""

    def __init__(self, base: Path, nodes: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.servers = []
        for i in range(nodes):
            d = base / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.servers.append(
                RedisServer(
                    port=cluster_port(),
                    directory=d,
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            )

    @property
    def url(self) -> str:
        """A plain URL naming one node: the client detects the cluster."""
        return f"redis://127.0.0.1:{self.servers[0].port}"

    @property
    def cluster_url(self) -> str:
        """The explicit form naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self) -> ClusterSetup:
        """Start the nodes, join them, wait until every slot is served."""
        try:
            return self._start()
        except BaseException:
            self.stop()  # no node outlives a setup that failed half way
            raise

    def _start(self) -> ClusterSetup:
        for s in self.servers:
            s.start()
        cli = shutil.which("redis-cli")
        assert cli is not None
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{s.port}" for s in self.servers),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        for s in self.servers:
            c = redis.Redis(port=s.port, decode_responses=True)
            while c.cluster("info").get("cluster_state") != "ok" or not self._synced(c):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach state ok")
                time.sleep(0.1)
            c.close()
        return self

    def _synced(self, c: redis.Redis) -> bool:
        # A primary with replicas counts once they are online (WAIT needs them).
        info = c.info("replication")
        if info.get("role") != "master" or not self.replicas:
            return True
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return sum(1 for v in online if v.get("state") == "online") >= self.replicas

    def stop(self) -> None:
        """Stop every node."""
        for s in self.servers:
            s.stop()
