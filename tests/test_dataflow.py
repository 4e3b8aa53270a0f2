"""Results, parent_results and progress (issue 18, items 4 and 5), against real Redis and
real workers, in fresh and reused task processes."""

from __future__ import annotations

import signal
from collections.abc import Callable

import orjson
import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.redisproc import RedisServer, free_port
from perseid_jobs.store.script_io import Claimed

from .conftest import WorkerProc, wait_until, wait_workers
from .test_cli import cli
from .test_metrics import get, samples

JOBS_OF = {"fresh": "dataflow_fresh", "reused": "dataflow_reused"}


@pytest.fixture(params=["fresh", "reused"])
def job(request: pytest.FixtureRequest) -> str:
    return JOBS_OF[request.param]


def test_a_result_round_trips_to_wait_and_show(
    client: Client,
    start_worker: Callable[..., WorkerProc],
    job: str,
    namespace: str,
    redis_server: RedisServer,
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    value = {"n": 3, "names": ["Ada", "Grace"], "ok": True, "ratio": 0.5, "none": None}
    done = client.wait(client.schedule(job, {"value": value}).id, 20)
    assert done.status is TaskStatus.COMPLETED and done.result == value
    shown = orjson.loads(cli("show", done.id, "--json", "--redis", redis_server.url,
                             "--namespace", namespace).stdout)  # fmt: skip
    assert shown["result"] == value
    # The same process (reused mode) serves the next task: its result is its own.
    again = client.wait(client.schedule(job, {"value": [1, 2]}).id, 20)
    assert again.result == [1, 2]
    nothing = client.wait(client.schedule(job, {"mode": "return"}).id, 20)
    assert nothing.status is TaskStatus.COMPLETED and nothing.result is None


def test_an_oversized_or_unserialisable_result_fails_the_task_saying_so(
    client: Client, start_worker: Callable[..., WorkerProc], job: str
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    big = client.wait(client.schedule(job, {"mode": "big", "size": 1 << 20}).id, 20)
    assert big.status is TaskStatus.FAILED and big.result is None
    assert big.reason is not None and "over the 65536-byte cap" in big.reason
    assert "1048578 bytes" in big.reason  # the string and its two quotes
    odd = client.wait(client.schedule(job, {"mode": "object"}).id, 20)
    assert odd.status is TaskStatus.FAILED
    assert odd.reason is not None and "result is not JSON-serialisable" in odd.reason
    # A cap of 64 KiB does not bound what fits the pipe: just under it passes.
    fits = client.wait(client.schedule(job, {"mode": "big", "size": 65_000}).id, 20)
    assert fits.status is TaskStatus.COMPLETED and fits.result == "x" * 65_000


def test_the_cap_is_the_workers_setting(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(4, "--max-result-bytes", str(1 << 21))
    wait_workers(client, 1)
    big = client.wait(client.schedule("dataflow_fresh", {"mode": "big", "size": 1 << 20}).id, 30)
    assert big.status is TaskStatus.COMPLETED and big.result == "x" * (1 << 20)


def test_a_fan_in_child_sees_its_parents_results(
    client: Client, start_worker: Callable[..., WorkerProc], job: str
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    a = client.schedule(job, {"value": {"from": "a"}})
    b = client.schedule(job, {"value": [1, 2, 3]})
    n = client.schedule(job, {"mode": "return"})  # returns None
    c = client.schedule(job, {"mode": "parents"}, after=[a.id, b.id, n.id])
    done = client.wait(c.id, 20)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == {"saw": {a.id: {"from": "a"}, b.id: [1, 2, 3], n.id: None}}
    one = client.schedule(job, {"mode": "parents"}, after=a.id)  # one parent, ended already
    assert client.wait(one.id, 20).result == {"saw": {a.id: {"from": "a"}}}


def progress_events(client: Client, task_id: str) -> list[dict[str, str]]:
    keys = client.keys_of(task_id)
    assert keys is not None
    return [f for _, f in client.redis.xrange(keys.events)
            if f.get("id") == task_id and f.get("event") == "progress"]  # fmt: skip


def test_ten_thousand_progress_calls_make_a_few_writes_a_second_and_the_last_shows(
    client: Client, start_worker: Callable[..., WorkerProc], job: str
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    args = {"mode": "progress", "calls": 10_000, "pause": 0.0002}
    done = client.wait(client.schedule(job, args).id, 60)
    assert done.status is TaskStatus.COMPLETED
    seconds = done.result["seconds"]
    writes = progress_events(client, done.id)
    assert seconds > 1.0  # spread out enough for the rate to mean something
    assert len(writes) <= 10 * seconds + 2, (len(writes), seconds)
    assert writes[-1] == {"event": "progress", "id": done.id, "fraction": "1.0",
                          "message": "step 10000 of 10000"}  # fmt: skip
    assert (done.progress, done.progress_message) == (1.0, "step 10000 of 10000")
    # A tight loop (no pause): its 10,000 calls make one or two writes.
    tight = client.wait(client.schedule(job, {"mode": "progress", "calls": 10_000}).id, 30)
    assert len(progress_events(client, tight.id)) <= 10 * tight.result["seconds"] + 2
    assert tight.progress == 1.0


def test_progress_shows_in_the_metrics_show_and_tasks(
    client: Client,
    start_worker: Callable[..., WorkerProc],
    redis_server: RedisServer,
    namespace: str,
) -> None:
    port = free_port()
    start_worker(4, "--metrics-port", str(port))
    wait_workers(client, 1)
    task = client.schedule("dataflow_fresh", {"mode": "progress", "calls": 40, "pause": 0.1})
    url = f"http://127.0.0.1:{port}/metrics"

    def running_progress() -> float | None:
        found = samples(get(url)[1]).get(
            ("perseid_jobs_task_progress", (("job_name", "dataflow_fresh"), ("task_id", task.id)))
        )
        return found if found and 0 < found < 1 else None

    assert wait_until(running_progress, 15, "a running task's progress in the metrics")
    common = ("--redis", redis_server.url, "--namespace", namespace)
    shown = cli("show", task.id, *common).stdout
    assert "progress" in shown and "% step " in shown
    assert "% step " in cli("tasks", "--status", "running", *common).stdout
    client.wait(task.id, 20)
    after = samples(get(url)[1])
    key = ("perseid_jobs_task_progress_updates_total", (("job_name", "dataflow_fresh"),))
    assert after[key] >= 2
    assert not any(name == "perseid_jobs_task_progress" for name, _ in after)  # it ended
    assert "100% step 40 of 40" in cli("show", task.id, *common).stdout


def test_an_adopted_child_whose_claim_reply_was_lost_still_sees_its_parents_results(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    """A claim that ran while its worker never heard back: the worker adopts the task when it
    reconciles, and starts it with its parents' results as a claim's start would have."""
    w = start_worker(2, "--instance-id", "adopter", "--lease-ttl", "30s")
    wait_workers(client, 1)
    a = client.schedule("dataflow_fresh", {"value": {"from": "a"}})
    assert client.wait(a.id, 20).status is TaskStatus.COMPLETED
    w.proc.send_signal(signal.SIGSTOP)  # the worker hears nothing until SIGCONT
    try:
        c = client.schedule("dataflow_fresh", {"mode": "parents"}, after=a.id)
        keys = client.keys_of(c.id)
        assert keys is not None
        reply = client.scripts_in(keys).claim("adopter", 1)  # its reply: "lost"
        assert isinstance(reply, Claimed) and [t.id for t in reply.tasks] == [c.id]
    finally:
        w.proc.send_signal(signal.SIGCONT)
    done = client.wait(c.id, 20)
    assert "reply was lost" in w.output()
    assert done.status is TaskStatus.COMPLETED
    assert done.result == {"saw": {a.id: {"from": "a"}}}
