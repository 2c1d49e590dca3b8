"""The API over a store with persistence: snapshots on demand, WAL figures in /metrics,
health while recovering."""
import errno
import os

import pytest
from prometheus_client import CollectorRegistry

from fiberapp.api import install
from fiberapp.http.request import Request
from fiberapp.http.router import Router
from queues.persist import open_store
from queues.persist.disk import Disk


@pytest.fixture
def persisted(tmp_path, clock, runtime):
    store, persistence = open_store(str(tmp_path / "data"), clock, runtime, wal_mode="write",
                                    snapshot_fork=False)
    store.start(runtime)
    router = Router()
    api = install(router, store=store, runtime=runtime, persistence=persistence, clock=clock,
                  registry=CollectorRegistry())
    yield router, store, persistence
    api.stop()
    persistence.close()


def call(router, method, target, json=None):
    return router.dispatch(Request.build(method, target, json=json))


def test_snapshot_on_demand(persisted, tmp_path):
    router, store, persistence = persisted
    assert call(router, "PUT", "/api/v1/tubes/s", {"driver": "fifo"}).status == 201
    assert call(router, "POST", "/api/v1/tubes/s/tasks", {"data": 1}).status == 201
    resp = call(router, "POST", "/api/v1/snapshot")
    assert resp.status == 200, resp.body
    body = resp.json_body()
    assert body["lsn"] >= 2 and (tmp_path / "data").exists()
    assert os.path.exists(body["file"]) or os.path.exists(os.path.join(str(tmp_path / "data"), body["file"]))


def test_metrics_carry_persistence_figures(persisted):
    router, store, persistence = persisted
    call(router, "PUT", "/api/v1/tubes/m", {"driver": "fifo"})
    text = call(router, "GET", "/metrics").body.decode()
    assert "fiberapp_persist_" in text
    assert "fiberapp_persist_recovering 0.0" in text


def test_health_is_503_while_persistence_recovers(persisted):
    router, store, persistence = persisted
    assert call(router, "GET", "/health").status == 200
    persistence.recovering = True
    try:
        resp = call(router, "GET", "/health")
        assert resp.status == 503 and resp.json_body() == {"status": "recovering"}
    finally:
        persistence.recovering = False


class FullDisk(Disk):
    """A disk whose space reservations fail with ENOSPC while ``full`` is set."""

    full = False

    def fallocate(self, fd, offset, length):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().fallocate(fd, offset, length)


def test_disk_full_answers_503_and_loses_nothing_then_recovers(tmp_path, clock, runtime):
    disk = FullDisk()
    store, persistence = open_store(str(tmp_path / "d"), clock, runtime, wal_mode="write",
                                    snapshot_fork=False, disk=disk)
    router = Router()
    api = install(router, store=store, runtime=runtime, persistence=persistence, clock=clock,
                  registry=CollectorRegistry(), start=False)
    try:
        assert call(router, "PUT", "/api/v1/tubes/f", {"driver": "fifo"}).status == 201
        disk.full = True
        # 40 x 200 KB runs past the 4 MiB the WAL reserved before the disk filled up
        statuses = {call(router, "POST", "/api/v1/tubes/f/tasks", {"data": "x" * 200_000}).status
                    for _ in range(40)}
        assert 503 in statuses and 500 not in statuses
        resp = call(router, "POST", "/api/v1/tubes/f/tasks", {"data": "x" * 200_000})
        body = resp.json_body()
        assert resp.status == 503 and body["error"]["code"] == "wal_disk_full"
        live = call(router, "GET", "/api/v1/tubes/f").json_body()["stats"]["tasks"]["total"]
        assert call(router, "GET", "/api/v1/tubes/f/tasks?limit=10000").status == 200  # reads work
        disk.full = False
        assert call(router, "POST", "/api/v1/tubes/f/tasks", {"data": "after"}).status == 201
        assert call(router, "GET", "/api/v1/tubes/f").json_body()["stats"]["tasks"]["total"] == live + 1
    finally:
        api.stop()
        persistence.close()
