"""Trigger, retry, bulk actions and tags on a three-primary Redis Cluster (12 partitions):
the bulk actions reach every partition on every primary, and the tag reads merge them."""

from __future__ import annotations

from pathlib import Path

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.partitions import partition_of_id

from ..conftest import JOBS
from ..test_controls import finish_due
from .servers import ClusterSetup

pytestmark = pytest.mark.chaos


def test_controls_over_a_cluster(tmp_path: Path) -> None:
    cluster = ClusterSetup(tmp_path / "cluster").start()
    try:
        client = Client.from_url(cluster.url, namespace="controls", jobs_dir=JOBS)
        made = [client.schedule("hello", {"n": n}, tags={"batch": "b1"}) for n in range(300)]
        assert len(client.partitions()) == 12
        assert len({partition_of_id(t.id) for t in made}) == 12  # spread over all of them
        assert {t.id for t in client.tasks(tag="batch=b1", limit=1000)} == {t.id for t in made}
        assert finish_due(client) == 300
        assert client.retry_many(job="hello", dry_run=True) == 300
        assert client.retry_many(job="hello") == 300
        assert client.retry_many(job="hello") == 0
        retries = client.tasks(status="pending", limit=1000)
        assert {t.retry_of for t in retries} == {t.id for t in made}
        assert {tuple(t.tags.items()) for t in retries} == {(("batch", "b1"),)}
        first = client.schedule("hello", every="1h", at="+1h")
        assert first.series is not None
        run = client.trigger(first.series)
        assert run.metadata["triggered"] and partition_of_id(run.id) == partition_of_id(first.id)
        assert client.cancel_many(job="hello") == 302  # the retries, the run and the trigger
        assert client.cancel_many(job="hello") == 0
        assert client.get(first.id).status is TaskStatus.CANCELLED
        client.close()
    finally:
        cluster.stop()
