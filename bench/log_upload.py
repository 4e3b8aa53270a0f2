"""Time the upload of a 50 MiB task log through S3Bucket to an S3 API on loopback.

Usage (after `make install`):  .venv/bin/python bench/log_upload.py [--mib 50] [--runs 3]

The server is moto's, in this process, on 127.0.0.1: the number measures our
upload path (transfer manager, multipart) and the local stack, not a network.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import boto3
import orjson
from moto.server import ThreadedMotoServer

from perseid_jobs.logs.bucket import S3Bucket, object_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_log(path: Path, size: int) -> None:
    """A realistic log: pino lines of varying length up to ``size`` bytes."""
    written = 0
    n = 0
    with path.open("wb") as file:
        while written < size:
            doc = {"level": 30, "time": 1_711_929_599_500 + n, "pid": 4242, "hostname": "worker-1"}
            line = orjson.dumps({**doc, "msg": f"processed batch {n}", "task": "01HBENCH"})
            line += b" " * (n % 97) + b"\n"
            file.write(line)
            written += len(line)
            n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50, help="log size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="uploads to time")
    args = parser.parse_args()

    # Dummy credentials: never touch a real account from a benchmark.
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bench-logs")
        bucket = S3Bucket("bench-logs", "logs", endpoint_url=endpoint)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "01HBENCH.log"
            write_log(path, args.mib * 1024 * 1024)
            size = path.stat().st_size
            times = []
            for run in range(args.runs):
                key = object_key("bench", f"01HBENCH{run}", int(time.time() * 1000))
                started = time.perf_counter()
                bucket.upload(path, key)
                times.append(time.perf_counter() - started)
                stored = client.head_object(Bucket="bench-logs", Key=f"logs/{key}")
                assert stored["ContentLength"] == size, "upload incomplete"
    finally:
        server.stop()
    median = statistics.median(times)
    print(
        f"{size / 2**20:.0f} MiB log via S3Bucket.upload to {endpoint}: "
        f"median {median:.2f} s over {args.runs} runs ({size / 2**20 / median:.0f} MiB/s); "
        f"runs: {', '.join(f'{t:.2f}' for t in times)} s"
    )


if __name__ == "__main__":
    main()
