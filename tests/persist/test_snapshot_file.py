"""The snapshot file's table form: dump() and dump_tables() write the same bytes, and
reading gives a Table the queue store restores from without a dict per task."""
import zlib

from fiberapp.runtime.clock import FakeClock
from queues.persist import snapshot as snapfile
from queues.persist.disk import Disk
from queues.persist.timeconv import shift
from queues.store import Store


def _store():
    store = Store(clock=FakeClock())
    tube = store.create_tube("jobs", "fifottl", ttl=50)
    for i in range(5):
        tube.put({"i": i, "created_at": 7}, delay=2 if i == 4 else 0)
    tube.take(timeout=0)
    return store


def _read(tmp_path, dump, delta=0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    disk = Disk()
    final = snapfile.publish(disk, str(tmp_path), snapfile.write_file(disk, str(tmp_path), 9, 0.0, dump))
    lsn, offset, raw = snapfile.read_file(disk, final)
    return snapfile.expand(raw, delta)


def _with_history():
    store = Store(clock=FakeClock())
    store.create_tube("dead", "fifottl")
    tube = store.create_tube("jobs", "fifottl", max_attempts=1, dead_letter="dead", ttl=30)
    tube.put("a")
    tube.put({"x": 1, "taken_at": 5})
    tube.release(tube.take(timeout=0).id)  # a dead-lettered task: history with taken_at
    tube.take(timeout=0)
    return store


def test_dump_and_dump_tables_read_back_the_same(tmp_path):
    store = _with_history()
    for delta in (0, 10.0, -3.5):
        a = _read(tmp_path / f"a{delta}", store.dump(), delta)
        b = _read(tmp_path / f"b{delta}", store.dump_tables(), delta)
        assert a["tasks"] == b["tasks"] and a["tubes"] == b["tubes"]


def test_deadlines_in_a_table_move_with_the_clock_history_included(tmp_path):
    store = _with_history()
    moved = Store.load(_read(tmp_path, store.dump_tables(), 10.0), clock=FakeClock())
    assert moved.dump() == shift(store.dump(), 10.0)
    history = moved.tube("dead").tasks()[0].history
    assert history[0]["taken_at"] == store.tube("dead").tasks()[0].history[0]["taken_at"] + 10.0


def test_read_back_as_a_table_that_reads_as_the_dump(tmp_path):
    store = _store()
    dump = _read(tmp_path, store.dump_tables())
    tasks = dump["tasks"]
    assert isinstance(tasks, snapfile.Table)
    assert tasks == store.dump()["tasks"] and list(tasks) == store.dump()["tasks"]
    assert len(tasks) == 5 and tasks[0] == store.dump()["tasks"][0]
    assert Store.load(dump, clock=FakeClock()).dump() == store.dump()


def test_expand_moves_deadlines_of_table_rows_but_not_the_payload(tmp_path):
    store = _store()
    raw = snapfile.tables(store.dump())
    before = store.dump()["tasks"]
    moved = snapfile.expand(raw, 10.0)["tasks"]
    for old, new in zip(before, moved):
        for key, value in old.items():
            if key.endswith("_at") and value is not None:
                assert new[key] == value + 10.0
            else:
                assert new[key] == value  # data's own "created_at" included


def test_the_file_is_written_in_pieces_with_the_bytes_of_one_packb(tmp_path, monkeypatch):
    import msgpack

    store = Store(clock=FakeClock())
    tube = store.create_tube("jobs", "fifo")
    for i in range(40):
        tube.put(i)
    monkeypatch.setattr(snapfile, "CHUNK_ROWS", 16)  # several chunks, a short last one
    monkeypatch.setattr(snapfile, "WRITE_SIZE", 100)  # several writes
    for dump in (store.dump(), store.dump_tables()):
        body = msgpack.packb(snapfile.tables(dump), use_bin_type=True)
        assert b"".join(snapfile.body_pieces(dump)) == body
        tmp = snapfile.write_file(Disk(), str(tmp_path), 5, 2.5, dump)
        with open(tmp, "rb") as f:
            assert f.read() == snapfile.MAGIC + snapfile.HEADER.pack(5, 2.5, len(body), zlib.crc32(body)) + body
