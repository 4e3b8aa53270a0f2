"""Private Redis topologies for the cluster benchmark: one server, or M primaries joined
with ``redis-cli --cluster create`` (the chaos suite's ClusterSetup lives under tests/)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from perseid_jobs.store.redisproc import RedisServer, cluster_port


class Topology:
    """``primaries`` redis-server processes; 1 is a plain server, more make a Cluster."""

    def __init__(self, primaries: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="perseid-cbench-"))
        self.cluster = primaries > 1
        self.servers: list[RedisServer] = []
        for i in range(primaries):
            d = self.base / f"node{i}"
            d.mkdir()
            extra = []
            if self.cluster:
                conf = str(d / "nodes.conf")
                extra = ["--cluster-enabled", "yes", "--cluster-config-file", conf]
            port = cluster_port() if self.cluster else None
            self.servers.append(RedisServer(port=port, directory=d, extra=extra))

    @property
    def url(self) -> str:
        """A URL naming the first node (the client detects a cluster)."""
        return f"redis://127.0.0.1:{self.servers[0].port}"

    def nodes(self) -> list[redis.Redis]:
        """A plain client of each primary, for INFO."""
        return [redis.Redis(port=s.port, decode_responses=True) for s in self.servers]

    def start(self) -> Topology:
        """Start every server; join them into a cluster whose every slot is served."""
        for s in self.servers:
            s.start()
        if not self.cluster:
            return self
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (it ships with redis-server)")
        addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for c in self.nodes():
            while c.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach state ok")
                time.sleep(0.1)
            c.close()
        return self

    def stop(self) -> None:
        """Stop every server and remove their directories."""
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.base, ignore_errors=True)
