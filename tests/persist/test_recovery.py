"""Persistence with a small store: recovery, snapshots, damage, the lock, deadlines."""
import errno
import logging
import os

import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist import (
    DataDirLocked,
    Persistence,
    SnapshotError,
    WalCorrupt,
    WalGap,
)
from queues.persist.record import HEADER_SIZE
from queues.persist.segment import FILE_HEADER, list_files

from .faults import FaultyDisk, tree_state
from .kvstore import KVAdapter


def opened(path, clock=None, **kw):
    p = Persistence(str(path), clock or FakeClock(), KVAdapter(), **kw)
    return p.open(), p


def segments(path):
    return [p for _lsn, p in list_files(os.path.join(path, "wal"), ".wal")[0]]


def snaps(path):
    return [p for _lsn, p in list_files(os.path.join(path, "snap"), ".snap")[0]]


def data_state(path):
    state = tree_state(str(path))
    state.pop("lock", None)
    return state


def fill(store, keys, prefix="k"):
    for i in keys:
        store.set(f"{prefix}{i}", i)


@pytest.mark.parametrize("mode", ["write", "fsync"])
def test_state_survives_restart(tmp_path, mode):
    store, p = opened(tmp_path, wal_mode=mode)
    fill(store, range(50))
    store.delete("k3")
    before = store.dump()
    p.close()
    store2, p2 = opened(tmp_path, wal_mode=mode)
    assert store2.dump() == before
    assert p2.recovery.records == 51
    store2.set("new", 1)
    assert p2.journal.lsn == 52  # LSNs go on after the recovered ones
    p2.close()


@pytest.mark.parametrize("fork", [True, False])
def test_snapshot_plus_wal_tail(tmp_path, fork):
    store, p = opened(tmp_path, snapshot_fork=fork)
    fill(store, range(30))
    info = p.snapshot()
    assert info["lsn"] == 30 and os.path.exists(info["file"])
    fill(store, range(30, 40))
    before = store.dump()
    p.close()
    store2, p2 = opened(tmp_path)
    assert store2.dump() == before
    assert p2.recovery.snapshot_lsn == 30 and p2.recovery.records == 10
    p2.close()


def test_snapshot_keeps_checkpoint_count_and_the_wal_they_need(tmp_path):
    store, p = opened(tmp_path, checkpoint_count=2)
    for round_ in range(5):
        fill(store, range(10), prefix=f"r{round_}-")
        p.snapshot()
    fill(store, range(3), prefix="tail")
    before = store.dump()
    p.close()
    assert [os.path.basename(s) for s in snaps(tmp_path)] == [f"{40:020d}.snap", f"{50:020d}.snap"]
    firsts = [int(os.path.basename(s)[:20]) for s in segments(tmp_path)]
    assert firsts[0] <= 41  # the WAL after the older kept snapshot is still there
    assert min(firsts) > 1  # ... and what no snapshot needs is gone
    # The newest snapshot damaged: the older one plus its WAL gives the same state.
    with open(snaps(tmp_path)[-1], "r+b") as f:
        f.truncate(os.path.getsize(snaps(tmp_path)[-1]) // 2)
    store2, p2 = opened(tmp_path)
    assert p2.recovery.snapshot_lsn == 40 and p2.recovery.fallbacks
    assert store2.dump() == before
    p2.close()


def test_torn_tail_is_cut_off_with_a_warning(tmp_path, caplog):
    store, p = opened(tmp_path)
    fill(store, range(10))
    before = store.dump()
    p.close()
    last = segments(tmp_path)[-1]
    size = os.path.getsize(last)
    with open(last, "ab") as f:  # a crash in the middle of writing record 11
        f.write(b"\x01\x0c\x1b\xfa\x40\x00\x00\x00\x99\x98")
    with caplog.at_level(logging.WARNING, logger="fiberapp.persist"):
        store2, p2 = opened(tmp_path)
    assert store2.dump() == before
    assert "torn" in caplog.text and last in caplog.text
    assert os.path.getsize(last) == size
    store2.set("after", 1)
    p2.close()
    store3, p3 = opened(tmp_path)  # the next start is clean
    assert store3.items["after"]["value"] == 1 and not p3.recovery.torn
    p3.close()


def _flip_bit_in_record(path, index):
    """Flip a bit inside the body of record number `index` of a segment."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    off = len(FILE_HEADER)
    for _ in range(index):
        length = int.from_bytes(data[off + 4: off + 8], "little")
        off += HEADER_SIZE + length
    data[off + HEADER_SIZE + 12] ^= 0x10
    with open(path, "wb") as f:
        f.write(data)
    return off


def test_flipped_bit_mid_file_stops_start_up_and_changes_nothing(tmp_path):
    store, p = opened(tmp_path)
    fill(store, range(20))
    p.close()
    seg = segments(tmp_path)[-1]
    offset = _flip_bit_in_record(seg, 5)
    state = data_state(tmp_path)
    with pytest.raises(WalCorrupt) as info:
        opened(tmp_path)
    assert info.value.path == seg and info.value.offset == offset
    assert seg in str(info.value) and str(offset) in str(info.value)
    assert data_state(tmp_path) == state
    # the lock was released: a forced start works, skipping record 6 only
    store2, p2 = opened(tmp_path, force_recovery=True)
    assert "k5" not in store2.items and "k19" in store2.items and len(store2.items) == 19
    assert p2.recovery.skipped
    p2.close()
    store3, p3 = opened(tmp_path)  # the forced start took a snapshot: no force needed now
    assert len(store3.items) == 19
    p3.close()


def test_missing_segment_is_a_gap(tmp_path):
    store, p = opened(tmp_path, wal_max_size=600)
    fill(store, range(60))
    p.close()
    segs = segments(tmp_path)
    assert len(segs) >= 3
    os.unlink(segs[1])
    state = data_state(tmp_path)
    with pytest.raises(WalGap) as info:
        opened(tmp_path)
    assert "missing" in str(info.value)
    assert data_state(tmp_path) == state
    store2, p2 = opened(tmp_path, force_recovery=True)
    assert "k0" in store2.items and "k59" in store2.items and len(store2.items) < 60
    p2.close()


def test_truncated_only_snapshot_without_wal_is_refused(tmp_path):
    store, p = opened(tmp_path, checkpoint_count=1)
    fill(store, range(10))
    p.snapshot()
    fill(store, range(10, 12))
    p.snapshot()  # the WAL before lsn 12 is removed
    p.close()
    snap = snaps(tmp_path)[-1]
    with open(snap, "r+b") as f:
        f.truncate(40)
    with pytest.raises(WalGap):
        opened(tmp_path)


def test_second_server_on_the_same_directory_is_refused(tmp_path):
    _store, p = opened(tmp_path)
    with pytest.raises(DataDirLocked) as info:
        opened(tmp_path)
    assert str(tmp_path) in str(info.value) and str(os.getpid()) in str(info.value)
    p.close()
    _store, p2 = opened(tmp_path)
    p2.close()


def test_deadlines_keep_their_wall_clock_time_across_downtime(tmp_path):
    clock = FakeClock(start=1000.0, wall=1_700_000_000.0)
    store, p = opened(tmp_path, clock=clock)
    store.set("snap", 1, expires_at=clock.monotonic() + 100)  # due at wall 1_700_000_100
    p.snapshot()
    store.set("wal", 2, expires_at=clock.monotonic() + 200)  # due at wall 1_700_000_200
    p.close()
    # Down for 50 s, and the machine rebooted: the monotonic clock restarted at 5.
    later = FakeClock(start=5.0, wall=1_700_000_050.0)
    store2, p2 = opened(tmp_path, clock=later)
    assert store2.items["snap"]["expires_at"] == pytest.approx(later.monotonic() + 50)
    assert store2.items["wal"]["expires_at"] == pytest.approx(later.monotonic() + 150)
    p2.close()


def test_checkpoint_fiber_snapshots_on_wal_threshold_and_interval(tmp_path):
    clock = FakeClock()
    store, p = opened(tmp_path, clock=clock, checkpoint_wal_threshold=2000,
                      checkpoint_interval=60, snapshot_fork=False)
    p.start()
    fill(store, range(5))
    clock.advance(1)
    p.wait_snapshot(10)
    assert p.stats()["last_snapshot_lsn"] == 0  # little WAL, interval not reached
    fill(store, range(5, 60))
    clock.advance(1)
    p.wait_snapshot(10)
    assert p.stats()["last_snapshot_lsn"] == 60  # threshold passed
    store.set("x", 1)
    clock.advance(30)
    p.wait_snapshot(10)
    assert p.stats()["last_snapshot_lsn"] == 60
    clock.advance(31)
    p.wait_snapshot(10)
    assert p.stats()["last_snapshot_lsn"] == 61  # interval passed
    p.close()


def test_failed_snapshot_leaves_the_previous_ones(tmp_path):
    disk = FaultyDisk()
    store, p = opened(tmp_path, disk=disk)
    fill(store, range(5))
    good = p.snapshot()["file"]
    fill(store, range(5, 8))
    disk.fail("fsync", errno.EIO)  # in the forked writer
    with pytest.raises(SnapshotError):
        p.snapshot()
    disk.heal()
    assert snaps(tmp_path) == [good]
    assert not [n for n in os.listdir(tmp_path / "snap") if n.endswith("inprogress")]
    assert p.snapshot()["lsn"] == 8
    p.close()


def test_open_store_with_the_queue_store_releases_taken_tasks_and_reports_progress(tmp_path):
    from queues.persist import open_store

    clock = FakeClock()
    store, p = open_store(str(tmp_path), clock, wal_mode="write")
    tube = store.create_tube("jobs", "fifottl", ttr=30)
    ids = [tube.put({"n": i}).id for i in range(3)]
    taken = tube.take(timeout=0)
    p.close()
    seen = []
    store2, p2 = open_store(str(tmp_path), clock, wal_mode="write",
                            on_persistence=lambda pers: seen.append(pers.recovering))
    assert seen == [False] and not p2.recovering and p2.progress["phase"] == "done"
    task = store2.tube("jobs").peek(taken.id)
    assert task.state == "ready" and task.attempts == 1 and task.releases == 1
    assert [t.id for t in store2.tube("jobs").tasks(state="ready")] == ids
    assert store2.tube("jobs").put({"n": 9}).id == ids[-1] + 1
    p2.close()
    # wal_mode none: an empty in-memory store, nothing read or written
    store3, p3 = open_store(str(tmp_path / "none"), clock, wal_mode="none")
    assert p3 is None and store3.tubes() == [] and not (tmp_path / "none").exists()


def test_task_data_with_at_keys_is_not_taken_for_a_deadline(tmp_path):
    from queues.persist import open_store

    clock = FakeClock(start=1000.0, wall=1_700_000_000.0)
    store, p = open_store(str(tmp_path), clock, wal_mode="write")
    tube = store.create_tube("jobs", "fifottl")
    payload = {"created_at": 5, "nested": [{"due_at": 7.5}]}
    first = tube.put(payload, delay=60)
    p.snapshot()
    second = tube.put(payload, delay=60)
    p.close()
    later = FakeClock(start=10.0, wall=1_700_000_100.0)  # rebooted, down 100 s
    store2, p2 = open_store(str(tmp_path), later, wal_mode="write")
    for tid in (first.id, second.id):
        task = store2.tube("jobs").peek(tid)
        assert task.data == payload
        assert task.ready_at == pytest.approx(later.monotonic() - 40)  # due 60 s after put
    p2.close()


def test_disk_full_with_the_queue_store_fails_the_put_and_applies_nothing(tmp_path):
    from queues.persist import WalDiskFull, open_store

    clock = FakeClock()
    disk = FaultyDisk()
    store, p = open_store(str(tmp_path), clock, wal_mode="fsync", disk=disk)
    p.journal.reserve_chunk = 1024  # run out of the reservation quickly
    tube = store.create_tube("jobs", "fifo")
    kept = tube.put("kept")
    disk.fail("fallocate", errno.ENOSPC)
    with pytest.raises(WalDiskFull):
        for i in range(100):
            tube.put("x" * 100)
    before = store.dump()
    ids = [t["id"] for t in before["tasks"]]
    with pytest.raises(WalDiskFull):
        tube.put("y" * 100)  # as large as the one that did not fit
    assert store.dump() == before  # nothing of the refused put is in memory
    assert tube.peek(kept.id).data == "kept"  # reads keep working
    disk.heal()
    resumed = tube.put("resumed")
    assert resumed.id == max(ids) + 1  # no id was burnt by the refused puts
    p.close()
    store2, p2 = open_store(str(tmp_path), clock, wal_mode="fsync")
    assert [t["id"] for t in store2.dump()["tasks"]] == ids + [resumed.id]
    p2.close()


def test_eio_on_fsync_with_the_queue_store(tmp_path):
    from queues.persist import WalIOError, open_store

    clock = FakeClock()
    disk = FaultyDisk()
    store, p = open_store(str(tmp_path), clock, wal_mode="fsync", disk=disk)
    tube = store.create_tube("jobs", "fifo")
    tube.put("a")
    disk.fail("fdatasync", errno.EIO)
    with pytest.raises(WalIOError):
        tube.put("b")  # applied in memory, not durable yet: the caller is told
    with pytest.raises(WalIOError):
        tube.put("c")  # refused while the WAL is broken: not applied
    assert [t.data for t in tube.tasks()] == ["a", "b"]
    assert not p.journal.wait_repair(10)
    disk.heal()
    clock.advance(2)
    with pytest.raises(WalIOError):
        tube.put("c")  # starts the repair
    assert p.journal.wait_repair(10)
    tube.put("d")
    p.close()
    store2, p2 = open_store(str(tmp_path), clock, wal_mode="fsync")
    assert [t.data for t in store2.tube("jobs").tasks()] == ["a", "b", "d"]
    p2.close()
