"""A crash while a segment was being started: the segment before it may end in a torn record.

In fsync mode log() starts the next segment (file, reservation, header) while the previous
segment's last records are still pending or in the WAL thread. A crash then leaves the older
segment with a torn last record (never acknowledged) and the newer one(s) holding no record:
a header and zeros, a cut header, or an empty file. Start-up cuts the torn tail and removes
the empty segments; damage followed by records (in the file or in a later one) still stops it.
"""
import logging
import os

import gevent
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist import Persistence, WalCorrupt
from queues.persist.recovery import holds_no_record, last_holding
from queues.persist.segment import FILE_HEADER, SegmentReader, segment_name

from .kvstore import KVAdapter
from .test_recovery import _flip_bit_in_record, data_state, segments, snaps


def opened(path, **kw):
    kw.setdefault("wal_mode", "fsync")
    p = Persistence(str(path), FakeClock(), KVAdapter(), **kw)
    return p.open(), p


def records_of(path):
    with open(path, "rb") as f:
        return [(off, lsn, op) for off, lsn, _w, op in SegmentReader(path, f.read(), newest=True)]


def build(path, n=200):
    """A data dir of several full segments written in fsync mode; returns their paths."""
    store, p = opened(path, wal_max_size=4096)
    for i in range(n):
        store.set(f"k{i}", "v" * 50)
    p.close()
    segs = segments(path)
    assert len(segs) >= 3
    return segs


def expected_items(segs):
    items = {}
    for seg in segs:
        for _off, _lsn, op in records_of(seg):
            items[op["key"]] = {"value": op["value"], "expires_at": op["expires_at"]}
    return {"items": dict(sorted(items.items()))}


def tear_last_record(seg, keep_bytes=20):
    """Cut the segment inside its last record (a write the crash interrupted)."""
    recs = records_of(seg)
    last_off = recs[-1][0]
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        f.truncate(size - keep_bytes)
    return last_off, recs[-1][1]


EMPTY_CONTENTS = {
    "header-and-zeros": FILE_HEADER + bytes(64 << 10),
    "cut-header": FILE_HEADER[:7] + bytes(4096),
    "nothing": b"",
}


@pytest.mark.parametrize("content", sorted(EMPTY_CONTENTS))
def test_torn_tail_before_a_newest_segment_holding_no_record_is_cut(tmp_path, content, caplog):
    segs = build(tmp_path)
    older, newest = segs[-2], segs[-1]
    torn_off, torn_lsn = tear_last_record(older)
    with open(newest, "wb") as f:  # the records bound for it never reached the disk
        f.write(EMPTY_CONTENTS[content])
    expected = expected_items(segs[:-1])  # every intact record (the torn one is not read)
    with caplog.at_level(logging.WARNING, logger="fiberapp.persist"):
        store, p = opened(tmp_path, wal_max_size=4096)
    assert store.dump() == expected
    assert p.recovery.last_lsn == torn_lsn - 1
    assert [(d.path, d.offset) for d, _end in p.recovery.torn] == [(older, torn_off)]
    assert p.recovery.empty == [newest]
    assert os.path.getsize(older) == torn_off  # the torn record is cut off ...
    # ... and the empty segment is gone (the journal starts the next one after the cut)
    assert newest not in segments(tmp_path)
    assert "torn" in caplog.text and "holds no record" in caplog.text
    store.set("after", 1)
    p.close()
    store2, p2 = opened(tmp_path, wal_max_size=4096)  # the next start is clean
    assert store2.items["after"]["value"] == 1
    assert not p2.recovery.torn and not p2.recovery.empty
    p2.close()


def test_several_empty_segments_after_the_torn_one_are_all_removed(tmp_path):
    segs = build(tmp_path)
    older = segs[-2]
    tear_last_record(older)
    first = int(os.path.basename(segs[-1])[:20])
    with open(segs[-1], "wb") as f:
        f.write(FILE_HEADER + bytes(8192))
    later = os.path.join(str(tmp_path), "wal", segment_name(first + 30))
    with open(later, "wb") as f:
        f.write(FILE_HEADER[:3])
    _store, p = opened(tmp_path, wal_max_size=4096)
    assert p.recovery.empty == [segs[-1], later]
    assert segments(tmp_path) == segs[:-1]
    p.close()


def test_a_checksum_error_with_records_after_it_still_stops_start_up(tmp_path):
    segs = build(tmp_path)
    older, newest = segs[-2], segs[-1]
    _flip_bit_in_record(older, 1)  # records follow it in the same file
    with open(newest, "wb") as f:
        f.write(FILE_HEADER + bytes(4096))
    before = data_state(tmp_path)
    with pytest.raises(WalCorrupt) as err:
        opened(tmp_path, wal_max_size=4096)
    assert err.value.path == older
    assert data_state(tmp_path) == before  # nothing was changed


def test_a_torn_tail_before_a_segment_holding_records_still_stops_start_up(tmp_path):
    segs = build(tmp_path)
    older = segs[-2]
    tear_last_record(older)  # the newest segment still holds its records
    before = data_state(tmp_path)
    with pytest.raises(WalCorrupt) as err:
        opened(tmp_path, wal_max_size=4096)
    assert err.value.path == older
    assert data_state(tmp_path) == before


def test_a_segment_with_a_torn_first_record_is_the_newest_holding_one(tmp_path):
    """Bytes past the header that are not zeros count as held: that segment is the newest
    holding one, so a torn tail in the segment before it is damage, not a torn tail."""
    segs = build(tmp_path)
    older, newest = segs[-2], segs[-1]
    first_rec = records_of(newest)[0][0]
    with open(newest, "r+b") as f:
        f.truncate(first_rec + 10)
    assert last_holding(segs) == len(segs) - 1
    _store, p = opened(tmp_path, wal_max_size=4096)  # newest: its torn first record is cut
    assert [d.path for d, _end in p.recovery.torn] == [newest] and not p.recovery.empty
    p.close()
    assert os.path.getsize(newest) == len(FILE_HEADER)
    tear_last_record(older)
    with open(newest, "r+b") as f:  # a part of a record again: not "holds no record"
        f.write(FILE_HEADER + b"\x01\x02\x03")
    with pytest.raises(WalCorrupt):
        opened(tmp_path, wal_max_size=4096)


def test_holds_no_record(tmp_path):
    cases = {
        b"": True,
        FILE_HEADER: True,
        FILE_HEADER[:5]: True,
        FILE_HEADER[:9] + bytes(100): True,
        FILE_HEADER + bytes(3 << 20): True,  # more than one read
        FILE_HEADER + bytes(3 << 20) + b"\x01": False,
        FILE_HEADER + b"\x00\x01": False,
        b"garbage": False,
        bytes(16) + b"x": False,
    }
    for i, (data, want) in enumerate(cases.items()):
        path = tmp_path / f"{i}.wal"
        path.write_bytes(data)
        assert holds_no_record(str(path)) is want, data[:20]
    assert holds_no_record(str(tmp_path / "missing.wal")) is False


def test_garbage_collection_after_the_empty_segment_is_removed(tmp_path):
    """Why the empty segments go: left on disk, a segment named after an LSN above the
    recovered ones would tell garbage collection (which takes a segment's end from the next
    file's name) that the segment recovery starts ends there, while it goes on holding
    newer records; with the newest snapshot damaged, the older one then misses them."""
    segs = build(tmp_path)
    first = int(os.path.basename(segs[-1])[:20])
    with open(segs[-1], "wb") as f:  # the newest: nothing written; one more started after it
        f.write(FILE_HEADER + bytes(4096))
    with open(os.path.join(str(tmp_path), "wal", segment_name(first + 3)), "wb") as f:
        f.write(FILE_HEADER + bytes(4096))
    store, p = opened(tmp_path, checkpoint_count=2, snapshot_fork=False)
    for i in range(5):
        store.set(f"a{i}", i)
    # Records logged while the snapshot is written stay in the segment it rotates away from.
    writer = gevent.spawn(lambda: [store.set(f"during{i}", i) for i in range(5)])
    s1 = p.snapshot()
    assert p.journal.lsn > s1["lsn"]  # logged before the snapshot rotated the journal
    writer.get()
    for i in range(5):
        store.set(f"b{i}", i)
    p.snapshot()
    before = store.dump()
    p.close()
    newest_snap = snaps(tmp_path)[-1]
    with open(newest_snap, "r+b") as f:  # the newest snapshot damaged: the older one is used
        f.truncate(os.path.getsize(newest_snap) // 2)
    store2, p2 = opened(tmp_path)
    assert p2.recovery.snapshot_lsn == s1["lsn"]
    assert store2.dump() == before
    p2.close()


def test_verify_and_cat_treat_the_torn_tail_as_torn(tmp_path):
    from click.testing import CliRunner

    from fiberapp.cli.wal import wal

    segs = build(tmp_path)
    older, newest = segs[-2], segs[-1]
    torn_off, _lsn = tear_last_record(older)
    with open(newest, "wb") as f:
        f.write(FILE_HEADER + bytes(4096))
    runner = CliRunner()
    result = runner.invoke(wal, ["verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{older}:" in result.output and f"torn tail at offset {torn_off}" in result.output
    assert f"{newest}: 0 records: holds no record" in result.output
    assert "0 problem(s)" in result.output
    cat = runner.invoke(wal, ["cat", str(tmp_path)])
    assert cat.exit_code == 0, cat.output
    assert "torn last record" in cat.output  # CliRunner mixes stderr in
    # damage followed by records is still damage
    _flip_bit_in_record(segs[0], 1)
    bad = runner.invoke(wal, ["verify", str(tmp_path)])
    assert bad.exit_code == 1 and "checksum mismatch" in bad.output
    assert newest in segments(tmp_path)  # read-only tools: nothing was removed
