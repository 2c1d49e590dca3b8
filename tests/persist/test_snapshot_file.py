"""The snapshot file's table form: dump() and dump_tables() write the same bytes, and
reading gives a Table the queue store restores from without a dict per task."""
from fiberapp.runtime.clock import FakeClock
from queues.persist import snapshot as snapfile
from queues.persist.disk import Disk
from queues.store import Store


def _store():
    store = Store(clock=FakeClock())
    tube = store.create_tube("jobs", "fifottl", ttl=50)
    for i in range(5):
        tube.put({"i": i, "created_at": 7}, delay=2 if i == 4 else 0)
    tube.take(timeout=0)
    return store


def test_dump_and_dump_tables_encode_to_the_same_bytes():
    store = _store()
    assert snapfile.encode(3, 1.5, store.dump()) == snapfile.encode(3, 1.5, store.dump_tables())


def test_read_back_as_a_table_that_reads_as_the_dump(tmp_path):
    store = _store()
    disk = Disk()
    final = snapfile.publish(disk, str(tmp_path), snapfile.write_file(disk, str(tmp_path), 9, 0.0,
                                                                        store.dump_tables()))
    lsn, offset, raw = snapfile.read_file(disk, final)
    dump = snapfile.expand(raw, 0)
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
