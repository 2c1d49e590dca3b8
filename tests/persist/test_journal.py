"""The WAL writer alone: framing, modes, group commit, rotation, disk faults."""
import errno
import os

import gevent
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.errors import QueueError
from queues.persist.errors import WalDiskFull, WalIOError
from queues.persist.journal import Journal
from queues.persist.record import Encoder, decode_at, BadRecord, HEADER_SIZE
from queues.persist.segment import SegmentReader, list_files

from .faults import FaultyDisk


def read_all(wal_dir):
    out = []
    segments, _ = list_files(wal_dir, ".wal")
    for i, (_first, path) in enumerate(segments):
        with open(path, "rb") as f:
            reader = SegmentReader(path, f.read(), newest=i == len(segments) - 1)
        out.extend((lsn, op) for _off, lsn, _wo, op in reader)
    return out


def test_record_round_trip_and_every_flipped_bit_is_detected():
    rec = Encoder().encode(7, 12.5, {"op": "put", "id": 3, "data": b"\x00\xff", "ready_at": 1.5})
    assert decode_at(rec, 0)[:3] == (7, 12.5, {"op": "put", "id": 3, "data": b"\x00\xff", "ready_at": 1.5})
    for bit in range(len(rec) * 8):
        damaged = bytearray(rec)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadRecord):
            decode_at(bytes(damaged), 0)
    for cut in range(len(rec)):
        with pytest.raises(BadRecord) as info:
            decode_at(rec[:cut], 0)
        assert info.value.incomplete


@pytest.mark.parametrize("mode", ["write", "fsync"])
def test_records_are_written_in_order_and_read_back(tmp_path, mode):
    j = Journal(str(tmp_path), mode, FakeClock())
    for i in range(100):
        j.wait(j.log({"op": "set", "key": i}))
    j.close()
    assert read_all(str(tmp_path)) == [(i + 1, {"op": "set", "key": i}) for i in range(100)]


def test_none_mode_writes_nothing_but_counts_lsns(tmp_path):
    j = Journal(str(tmp_path), "none", FakeClock())
    assert [j.log({"op": "x"}) for _ in range(3)] == [1, 2, 3]
    j.wait(3)
    j.close()
    assert os.listdir(tmp_path) == []


def test_write_mode_hands_the_record_to_the_os_before_wait_returns(tmp_path):
    j = Journal(str(tmp_path), "write", FakeClock())
    token = j.log({"op": "a"})
    assert read_all(str(tmp_path)) == []  # only buffered so far
    j.wait(token)
    assert read_all(str(tmp_path)) == [(1, {"op": "a"})]  # another reader sees it
    j.close()


def test_fsync_mode_group_commits_concurrent_fibers(tmp_path):
    j = Journal(str(tmp_path), "fsync", FakeClock())

    def worker(n):
        for i in range(20):
            j.wait(j.log({"op": "set", "key": f"{n}-{i}"}))

    gevent.joinall([gevent.spawn(worker, n) for n in range(50)], raise_error=True)
    assert j.records == 1000
    assert j.fsyncs == j.batches
    assert j.batches < 200  # 1,000 records, far fewer fsyncs: they were batched
    j.close()
    assert sorted(op["key"] for _lsn, op in read_all(str(tmp_path))) == sorted(
        f"{n}-{i}" for n in range(50) for i in range(20))
    assert [lsn for lsn, _ in read_all(str(tmp_path))] == list(range(1, 1001))


def test_segments_rotate_at_max_size_and_are_named_by_first_lsn(tmp_path):
    j = Journal(str(tmp_path), "write", FakeClock(), max_size=2000)
    for i in range(200):
        j.wait(j.log({"op": "set", "key": i, "pad": "x" * 50}))
    j.close()
    segments, _ = list_files(str(tmp_path), ".wal")
    assert len(segments) > 5
    records = read_all(str(tmp_path))
    assert [lsn for lsn, _ in records] == list(range(1, 201))
    for first, path in segments:
        with open(path, "rb") as f:
            first_record = next(iter(SegmentReader(path, f.read())))
        assert first_record[1] == first
        # sealed segments hold no unused reservation beyond one record's overshoot
        assert os.path.getsize(path) < 2000 + 200


def test_disk_full_fails_the_log_call_and_writes_resume_when_space_returns(tmp_path):
    disk = FaultyDisk()
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk, reserve_chunk=4096)
    j.wait(j.log({"op": "a"}))
    disk.fail("fallocate", errno.ENOSPC)
    with pytest.raises(WalDiskFull) as info:
        for _ in range(1000):  # runs out of the reserved chunk soon
            j.wait(j.log({"op": "b", "pad": "x" * 100}))
    assert isinstance(info.value, QueueError)
    logged = j.lsn
    with pytest.raises(WalDiskFull):
        j.log({"op": "c", "pad": "x" * 5000})
    assert j.lsn == logged  # the failed call consumed no LSN
    disk.heal()
    j.wait(j.log({"op": "d"}))
    j.close()
    records = read_all(str(tmp_path))
    assert [lsn for lsn, _ in records] == list(range(1, logged + 2))
    assert records[-1][1] == {"op": "d"}


@pytest.mark.parametrize("mode,method", [("fsync", "fdatasync"), ("fsync", "pwrite"), ("write", "pwrite")])
def test_io_error_breaks_the_journal_until_repaired(tmp_path, mode, method):
    clock = FakeClock()
    disk = FaultyDisk()
    j = Journal(str(tmp_path), mode, clock, disk=disk)
    j.wait(j.log({"op": "a"}))
    disk.fail(method, errno.EIO)
    token = j.log({"op": "b"})
    with pytest.raises(WalIOError):
        j.wait(token)
    with pytest.raises(WalIOError):
        j.log({"op": "c"})  # not applied: the caller must not apply it
    assert not j.wait_repair(10)  # the repair attempt failed too: the disk still fails
    disk.heal()
    clock.advance(2)
    with pytest.raises(WalIOError):
        j.log({"op": "c"})  # starts a repair
    assert j.wait_repair(10)
    j.wait(j.log({"op": "e"}))
    j.close()
    # "b" was applied in memory before the failure; the repair wrote it, once.
    assert read_all(str(tmp_path)) == [(1, {"op": "a"}), (2, {"op": "b"}), (3, {"op": "e"})]


def test_short_writes_are_completed(tmp_path):
    disk = FaultyDisk()
    disk.short_writes(7)
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk)
    for i in range(20):
        j.wait(j.log({"op": "set", "key": i, "data": b"z" * 40}))
    j.close()
    assert [op["key"] for _lsn, op in read_all(str(tmp_path))] == list(range(20))
    assert disk.calls["pwrite"] > 20 * (HEADER_SIZE + 40) // 7
