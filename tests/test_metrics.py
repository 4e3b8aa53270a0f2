"""Metrics and health endpoints of a real worker, scraped over HTTP."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.redisproc import RedisServer, free_port
from perseid_jobs.worker.settings import WorkerSettings, worker_argv

from .conftest import JOBS, wait_until, wait_workers


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening yet: it starts just after registering
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# Labels a Prometheus server sets or reserves: a target's `job` and `instance` (an exported
# one is renamed `exported_job`), names starting with `__`, and the bucket and quantile
# labels outside histograms and summaries.
TARGET_LABELS = {"job", "instance"}
SERIES_LABELS = {"histogram": {"le"}, "summary": {"quantile"}}


def check_exposition(text: str) -> None:
    """Every family parses with HELP and TYPE, and no label name clashes with a reserved one."""
    families = list(text_string_to_metric_families(text))
    assert families
    lines = text.splitlines()
    for family in families:
        # The parser names a counter's family without the `_total` its lines carry.
        names = {family.name, f"{family.name}_total"} if family.type == "counter" else {family.name}
        for kind in ("HELP", "TYPE"):
            heads = [line for line in lines if line.startswith(f"# {kind} ")]
            assert any(head.split()[2] in names for head in heads), (kind, family.name)
        assert family.documentation.strip(), family.name
        assert family.type != "unknown", family.name
        allowed = SERIES_LABELS.get(family.type, set())
        for sample in family.samples:
            for label in sample.labels:
                assert not label.startswith("__"), (sample.name, label)
                assert label not in TARGET_LABELS, (sample.name, label)
                assert label not in {"le", "quantile"} - allowed, (sample.name, label)


def test_worker_serves_metrics_with_job_name_labels_and_health(
    client: Client, start_worker
) -> None:
    port = free_port()
    start_worker(8, "--metrics-port", str(port))
    wait_workers(client, 1)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/readyz")[0] == 200, 10, "ready")
    assert get(f"{base}/healthz")[0] == 200
    ends = [client.wait(client.schedule(job).id, 15).status
            for job in ("hello", "hello", "fail", "cancel_self")]  # fmt: skip
    assert ends == [TaskStatus.COMPLETED] * 2 + [TaskStatus.FAILED, TaskStatus.CANCELLED]

    def scraped() -> dict:
        m = samples(get(f"{base}/metrics")[1])
        done = m.get(("perseid_jobs_tasks_total", (("job_name", "hello"), ("status", "completed"))))
        return m if done == 2 else {}

    m = wait_until(scraped, 10, "metrics of the finished tasks")
    assert isinstance(m, dict)
    check_exposition(get(f"{base}/metrics")[1])
    assert m[("perseid_jobs_tasks_total", (("job_name", "fail"), ("status", "failed")))] == 1
    key = ("perseid_jobs_tasks_total", (("job_name", "cancel_self"), ("status", "cancelled")))
    assert m[key] == 1
    assert m[("perseid_jobs_tasks_total", (("job_name", "hello"), ("status", "claimed")))] == 2
    assert m[("perseid_jobs_task_duration_seconds_count", (("job_name", "hello"),))] == 2
    assert m[("perseid_jobs_task_start_lag_seconds_count", (("job_name", "hello"),))] == 2
    assert m[("perseid_jobs_slots_total", ())] == 8
    assert m[("perseid_jobs_slots_used", ())] == 0
    assert m[("perseid_jobs_due_backlog", ())] == 0
    assert not any(label == "job" for (_, labels) in m for label, _ in labels)


def test_readyz_says_not_ready_while_redis_is_down_and_ready_again_after(
    tmp_path: Path,
) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(directory=tmp_path / "redis").start()
    port = free_port()
    settings = WorkerSettings(
        slots=2, jobs_dir=JOBS, redis_url=server.url, namespace="ready", heartbeat_s=0.2,
        lease_ttl_s=5, reap_interval_s=0.3, logs_dir=tmp_path / "logs",
        bucket_url=f"file://{tmp_path / 'bucket'}", metrics_port=port,
    )  # fmt: skip
    worker = subprocess.Popen(worker_argv(settings), stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, 15, "ready")
        server.kill()
        wait_until(lambda: get(f"{base}/readyz")[0] == 503, 15, "not ready")
        assert get(f"{base}/healthz")[0] == 200  # alive all along: no restart wanted
        server.start()
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, 20, "ready again")
    finally:
        worker.kill()
        worker.wait()
        server.stop()


def test_flow_metrics_show_each_limit_in_use_and_what_is_held_back(
    client: Client, start_worker
) -> None:
    port = free_port()
    start_worker(4, "--metrics-port", str(port))
    wait_workers(client, 1)
    base = f"http://127.0.0.1:{port}"
    first = client.schedule("flow_serial", {"seconds": 30})
    wait_until(lambda: client.get(first.id).status is TaskStatus.RUNNING, 15, "first running")
    client.schedule("flow_serial")
    client.pause(group="acme")
    for _ in range(3):
        client.schedule("hello", group="acme")
    probe = client.schedule("hello")
    assert client.wait(probe.id, 15).status is TaskStatus.COMPLETED  # claims went past them
    held = ("perseid_jobs_tasks_held", (("reason", "concurrency"),))

    def scraped() -> dict:
        m = samples(get(f"{base}/metrics")[1])
        paused = m.get(("perseid_jobs_tasks_held", (("reason", "paused"),)))
        return m if m.get(held) == 1 and paused == 3 else {}

    m = wait_until(scraped, 10, "the held tasks")
    assert isinstance(m, dict)
    labels = (("job_name", "flow_serial"), ("limit", "concurrency"))
    assert m[("perseid_jobs_limit", labels)] == 1
    assert m[("perseid_jobs_limit_in_use", labels)] == 1
    check_exposition(get(f"{base}/metrics")[1])
    client.cancel(first.id)
