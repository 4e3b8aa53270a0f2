"""A task's first Redis connection in a forked child, with and without the zygote's pre-warm.

``python -m bench.connect_cost [--children N] [--rounds R] [--url URL]``

Each variant runs in a fresh interpreter set up as the zygote is (fork handlers
recorded first, the zygote's modules imported, libc's fork when safe, the heap
frozen) that has also imported redis-py, as a job file that talks to Redis
would. It then forks N children one after the other, waiting for each:

- ``fork``: the child exits at once (the floor);
- ``connect``: the child connects, RPUSHes one item and exits;
- ``connect, pre-warmed``: the same, after :func:`perseid_jobs.launch.warmup.prewarm_connections`
  in the parent, as the zygote now does before it forks.

Variants alternate over R rounds (so drift on a shared machine hits each one
alike); the median ms per child is reported, with the ratios, in one run.
Without ``--url`` a private redis-server is started.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench.systems import ROOT

VARIANTS = ("fork", "connect", "connect, pre-warmed")


def child_loop(variant: str, url: str, n: int) -> float:
    """In a fresh interpreter: fork ``n`` children of ``variant``; ms per child."""
    from perseid_jobs.launch import forking

    forking.record()  # as the zygote does, before anything registers a fork handler
    import gc
    import os

    import redis

    import perseid_jobs.launch.zygote  # noqa: F401  (the zygote's address space)
    from perseid_jobs.launch.warmup import prewarm_connections

    if variant == "connect, pre-warmed":
        prewarm_connections()
    forking.choose()
    gc.freeze()
    connect = variant != "fork"
    start = time.perf_counter()
    for _ in range(n):
        pid = forking.fork()
        if pid == 0:
            code = 1
            try:
                if connect:
                    redis.Redis.from_url(url).rpush("bench:connect-cost", b"x")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"a {variant!r} child exited with status {status}")
    return (time.perf_counter() - start) * 1000 / n


def measure(url: str, children: int, rounds: int) -> dict[str, list[float]]:
    """ms per child of each variant, one value per round."""
    found: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            argv = [sys.executable, "-m", "bench.connect_cost", "--variant", variant]
            argv += ["--url", url, "--children", str(children)]
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"{variant}: {done.stderr[-2000:]}")
            found[variant].append(float(done.stdout))
    return found


def render(found: dict[str, list[float]], children: int, rounds: int) -> str:
    """The table: ms per child (median [min–max]) and the ratios."""
    med = {v: statistics.median(ms) for v, ms in found.items()}
    fork, cold, warm = (med[v] for v in VARIANTS)
    lines = [
        f"{children} children per variant, {rounds} alternating rounds; ms per child,"
        " median [min–max]:",
        "",
        "| variant | ms per child | vs fork + exit |",
        "| --- | --- | --- |",
    ]
    for v in VARIANTS:
        lo, hi = min(found[v]), max(found[v])
        lines.append(f"| {v} | {med[v]:.2f} [{lo:.2f}–{hi:.2f}] | {med[v] / fork:.2f}× |")
    lines += [
        "",
        f"pre-warmed / cold connect: {warm / cold:.2f}× ({cold - warm:.2f} ms less per child);"
        f" the connection's own cost above fork + exit: {cold - fork:.2f} → {warm - fork:.2f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse argv; run one variant's loop (``--variant``), or every variant and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.connect_cost", description=__doc__)
    p.add_argument("--children", type=int, default=300, help="children forked per variant")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the variants")
    p.add_argument("--url", default="", help="a Redis URL (default: a private redis-server)")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(f"{child_loop(args.variant, args.url, args.children):.4f}")
        return
    if args.url:
        print(render(measure(args.url, args.children, args.rounds), args.children, args.rounds))
        return
    from perseid_jobs.store.redisproc import RedisServer

    server = RedisServer().start()
    try:
        print(render(measure(server.url, args.children, args.rounds), args.children, args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
