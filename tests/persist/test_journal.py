"""The WAL writer alone: framing, modes, group commit, rotation, disk faults."""
import errno
import os

import gevent
import gevent.event
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.errors import QueueError
from queues.persist.errors import WalCorrupt, WalDiskFull, WalIOError
from queues.persist.journal import ZERO_AHEAD, Journal
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


@pytest.mark.parametrize("mapped", [True, False])
def test_write_mode_hands_the_record_to_the_os_before_log_returns(tmp_path, mapped):
    j = Journal(str(tmp_path), "write", FakeClock(), mapped=mapped)
    assert j.log({"op": "a"}) is None  # nothing to wait for: the store skips wait()
    assert read_all(str(tmp_path)) == [(1, {"op": "a"})]  # another reader sees it
    j.wait(None)
    j.close()
    assert read_all(str(tmp_path)) == [(1, {"op": "a"})]


def test_write_mode_records_written_through_the_mapping_survive_the_process(tmp_path):
    """A child process logs through the mapping and dies without closing anything
    (os._exit: no flush, no unmap, as after SIGKILL); the parent reads every record."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            j = Journal(str(tmp_path), "write", FakeClock(), reserve_chunk=4096)
            for i in range(500):  # crosses several reservations (re-mapping each time)
                j.log({"op": "set", "key": i, "pad": "y" * 30})
            assert j._seg.map is not None
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert read_all(str(tmp_path)) == [(i + 1, {"op": "set", "key": i, "pad": "y" * 30})
                                       for i in range(500)]


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


def test_write_mode_io_error_refuses_the_op_and_writes_resume_when_the_disk_heals(tmp_path):
    disk = FaultyDisk()
    j = Journal(str(tmp_path), "write", FakeClock(), disk=disk)
    assert j.log({"op": "a"}) is None
    disk.short_writes(5)
    disk.fail("pwrite", errno.EIO, times=2)
    for _ in range(2):
        with pytest.raises(WalIOError) as info:
            j.log({"op": "b", "pad": "z" * 40})
        assert isinstance(info.value, QueueError)
    assert j.lsn == 1  # the failed calls used no LSN: the caller applies nothing
    j.log({"op": "c"})  # healed (short writes are completed)
    disk.fail("pwrite", errno.ENOSPC, times=1)
    with pytest.raises(WalDiskFull):
        j.log({"op": "d"})
    disk.heal()
    disk.short_writes(None)
    j.log({"op": "e"})
    j.close()
    assert read_all(str(tmp_path)) == [(1, {"op": "a"}), (2, {"op": "c"}), (3, {"op": "e"})]


@pytest.mark.parametrize("mode,method", [("fsync", "fdatasync"), ("fsync", "pwrite")])
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


@pytest.mark.parametrize("head", [b"", b"fiberapp-w", b"fiberapp-wal 1"])
def test_a_segment_whose_header_was_cut_short_after_its_space_was_reserved_is_torn(tmp_path, head):
    """A kill between creating a segment (space reserved: zeros) and writing its header."""
    data = head + bytes(4096 - len(head))
    reader = SegmentReader(str(tmp_path / "x.wal"), data, newest=True)
    assert list(reader) == [] and reader.torn.offset == 0 and reader.end == 0
    with pytest.raises(WalCorrupt):  # only the newest segment may be torn
        list(SegmentReader(str(tmp_path / "x.wal"), data, newest=False))
    with pytest.raises(WalCorrupt):  # anything but zeros after it is damage
        list(SegmentReader(str(tmp_path / "x.wal"), data[:-1] + b"\x01", newest=True))


def test_fsync_mode_writes_zeros_ahead_of_its_records_within_the_reservation(tmp_path):
    j = Journal(str(tmp_path), "fsync", FakeClock(), reserve_chunk=1 << 20)
    for i in range(10):
        j.wait(j.log({"op": "set", "key": i}))
    seg = j._seg
    assert seg.end < seg.zeroed <= seg.reserved  # written zeros past the records
    assert seg.zeroed >= seg.end + ZERO_AHEAD // 2
    with open(seg.path, "rb") as f:
        data = f.read()
    assert len(data) == seg.reserved  # the zeros never grow the file
    assert data[seg.end:seg.zeroed] == bytes(seg.zeroed - seg.end)
    j.close()
    assert [op["key"] for _lsn, op in read_all(str(tmp_path))] == list(range(10))


def test_write_mode_a_record_larger_than_the_reservation_chunk_and_the_segment(tmp_path):
    j = Journal(str(tmp_path), "write", FakeClock(), max_size=1 << 20, reserve_chunk=64 << 10)
    big = b"b" * (3 << 20)
    j.log({"op": "a"})
    j.log({"op": "big", "data": big})  # reserved and mapped in one step, past max_size
    j.log({"op": "c"})  # the next record starts a new segment
    j.close()
    assert [(lsn, op["op"]) for lsn, op in read_all(str(tmp_path))] == [(1, "a"), (2, "big"), (3, "c")]
    assert read_all(str(tmp_path))[1][1]["data"] == big
    assert len(list_files(str(tmp_path), ".wal")[0]) == 2


def test_fsync_mode_a_fiber_interrupted_while_parked_is_never_switched_into_later(tmp_path):
    """wait() parks the fiber itself in the hub: one interrupted there (a kill, a Timeout)
    must leave the batch's list, or the batch's completion would switch into it wherever it
    is parked by then."""

    class Interrupt(Exception):
        pass

    j = Journal(str(tmp_path), "fsync", FakeClock())
    elsewhere = gevent.event.AsyncResult()

    def interrupted():
        token = j.log({"op": "a"})
        try:
            j.wait(token)
        except Interrupt:
            return ("parked elsewhere", elsewhere.get())
        return ("not interrupted", None)

    fiber = gevent.spawn(interrupted)
    gevent.sleep(0)  # it logged and parked in wait(); its batch is not submitted yet
    assert fiber in j._waiters
    fiber.kill(Interrupt, block=False)  # thrown in after the batch has gone to the thread
    j.wait(j.log({"op": "b"}))  # the first batch completed, then this one
    assert not fiber.dead  # still parked on `elsewhere`, not woken by the journal
    elsewhere.set("its own wake-up")
    assert fiber.get(timeout=10) == ("parked elsewhere", "its own wake-up")
    j.close()
    assert read_all(str(tmp_path)) == [(1, {"op": "a"}), (2, {"op": "b"})]


def test_fsync_mode_wait_in_the_hub_is_refused(tmp_path):
    j = Journal(str(tmp_path), "fsync", FakeClock())
    token = j.log({"op": "a"})
    result = gevent.event.AsyncResult()

    def in_hub():
        try:
            j.wait(token)
        except RuntimeError as exc:
            result.set(str(exc))

    gevent.get_hub().loop.run_callback(in_hub)
    assert "hub" in result.get(timeout=10)
    j.wait(token)
    j.close()
