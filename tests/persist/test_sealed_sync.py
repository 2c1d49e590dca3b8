"""Write mode: a segment sealed by rotation is fdatasynced (with its directory) off the
loop, so after a power loss only the newest segment's tail can be missing - never a hole
in an older segment with whole records after it."""
import errno
import logging
import os

import gevent
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist.errors import WalIOError
from queues.persist.journal import Journal

from .faults import FaultyDisk
from .test_journal import read_all


class SyncLog(FaultyDisk):
    """Records which files were fdatasynced and which directories fsynced."""

    def __init__(self):
        super().__init__()
        self.paths = {}
        self.synced = []
        self.dirs = []

    def open(self, path, flags, mode=0o644):
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    fail_path = None  # fdatasync of this file fails with EIO

    def fdatasync(self, fd):
        path = self.paths[fd]
        self.synced.append(path)
        if path == self.fail_path:
            raise OSError(errno.EIO, "injected EIO in fdatasync")
        super().fdatasync(fd)

    def fsync_dir(self, path):
        self.dirs.append(path)
        super().fsync_dir(path)


def _segments(wal_dir):
    return sorted(os.path.join(wal_dir, name) for name in os.listdir(wal_dir) if name.endswith(".wal"))


def test_every_sealed_segment_is_synced_and_closed(tmp_path):
    disk = SyncLog()
    j = Journal(str(tmp_path), "write", FakeClock(), disk=disk, max_size=2000)
    for i in range(60):
        j.log({"op": "put", "id": i, "data": b"x" * 100})
    segments = _segments(str(tmp_path))
    assert len(segments) >= 3
    j.sync()  # waits for the sealed segments' syncs too
    assert set(segments[:-1]) <= set(disk.synced)
    assert str(tmp_path) in disk.dirs
    sealed_fds = [fd for fd, path in disk.paths.items() if path in segments[:-1]]
    for fd in sealed_fds:  # closed by the sync job, not left open
        assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") not in segments[:-1]
    j.close()
    assert [op["id"] for _lsn, op in read_all(str(tmp_path))] == list(range(60))


def test_a_failed_sync_of_a_sealed_segment_is_logged_and_writing_goes_on(tmp_path, caplog):
    disk = SyncLog()
    j = Journal(str(tmp_path), "write", FakeClock(), disk=disk, max_size=2000,
                logger=logging.getLogger("test.sealed"))
    disk.fail_path = os.path.join(str(tmp_path), "00000000000000000001.wal")
    with caplog.at_level(logging.WARNING, logger="test.sealed"):
        for i in range(30):
            j.log({"op": "put", "id": i, "data": b"x" * 100})
        j.sync()
        gevent.idle()
    assert any("sealed WAL segment" in r.getMessage() for r in caplog.records)
    assert j.write_errors == 1
    for i in range(30, 40):  # the op path never saw it
        j.log({"op": "put", "id": i, "data": b"x" * 100})
    j.close()
    assert [op["id"] for _lsn, op in read_all(str(tmp_path))] == list(range(40))


def test_fsync_mode_seals_without_an_extra_sync(tmp_path):
    """fsync mode's sealed segments were synced record by record: no second fdatasync."""
    disk = SyncLog()
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk, max_size=2000)
    for i in range(40):
        j.wait(j.log({"op": "put", "id": i, "data": b"x" * 100}))
    batches = j.fsyncs
    j.close()
    assert len(disk.synced) <= batches + 1  # the batches, and close()'s own


def test_a_failing_final_fdatasync_is_a_typed_error(tmp_path):
    disk = SyncLog()
    j = Journal(str(tmp_path), "write", FakeClock(), disk=disk)
    j.log({"op": "put", "id": 1, "data": b"x"})
    disk.fail_path = os.path.join(str(tmp_path), "00000000000000000001.wal")
    with pytest.raises(WalIOError, match="fdatasync WAL segment"):
        j.close()
    assert j._seg is None  # the files are closed all the same
