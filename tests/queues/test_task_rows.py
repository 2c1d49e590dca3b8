"""Tasks as rows (FIELDS order) and the store's table form of a dump: what snapshots
write and recovery reads back without a dict per task."""
import pytest

from queues.errors import ReplayError
from queues.states import READY, TAKEN
from queues.store import Store
from queues.task import FIELDS, Task


def _filled(clock):
    store = Store(clock=clock)
    tube = store.create_tube("jobs", "fifottl", ttr=5)
    store.create_tube("other", "utube")
    for i in range(6):
        tube.put({"n": i, "created_at": 1}, pri=i % 3, ttl=100 if i % 2 else None,
                 delay=3 if i == 5 else 0)
    store.tube("other").put("u", utube="a")
    taken = tube.take(timeout=0)
    again = tube.take(timeout=0)
    tube.release(again.id)
    tube.bury(tube.tasks(state=READY)[-1].id)
    return store, taken


def test_from_row_and_row_round_trip_every_field():
    row = tuple(f"v-{name}" for name in FIELDS)
    task = Task.from_row(row, clock="c")
    assert task.row() == row
    assert task.record() == dict(zip(FIELDS, row))
    assert Task.from_record(task.record()).row() == row
    assert task._clock == "c" and task.existing is False and task._entry is None


def test_dump_tables_reads_as_the_dump(clock):
    store, _taken = _filled(clock)
    dump, tables = store.dump(), store.dump_tables()
    assert tuple(tables["tasks"].columns) == FIELDS
    assert list(tables["tasks"]) == dump["tasks"]
    assert {k: v for k, v in tables.items() if k != "tasks"} == {k: v for k, v in dump.items() if k != "tasks"}


def test_restore_from_rows_equals_restore_from_dicts(clock):
    store, taken = _filled(clock)
    from_dicts = Store.load(store.dump(), clock=clock)
    from_rows = Store.load(store.dump_tables(), clock=clock)
    assert from_rows.dump() == from_dicts.dump() == store.dump()
    # the indexes work, not only the records: the taken task is owned, the rest is served
    assert from_rows.tube("jobs").peek(taken.id).state == TAKEN
    assert from_rows.sessions._taken[taken.session][taken.id].id == taken.id
    assert [from_rows.tube("jobs").take(timeout=0).id for _ in range(2)] == \
           [from_dicts.tube("jobs").take(timeout=0).id for _ in range(2)]


def test_a_table_in_another_column_order_is_read_as_dicts(clock):
    store, _taken = _filled(clock)
    tables = store.dump_tables()
    columns = tuple(reversed(FIELDS))

    class Other:
        def __init__(self, rows):
            self.columns = columns
            self.rows = [tuple(reversed(row)) for row in rows]

        def __iter__(self):
            return (dict(zip(self.columns, row)) for row in self.rows)

    tables["tasks"] = Other(tables["tasks"].rows)
    assert Store.load(tables, clock=clock).dump() == store.dump()


def test_a_row_naming_an_unknown_tube_is_refused(clock):
    store, _taken = _filled(clock)
    tables = store.dump_tables()
    tables["tubes"] = [t for t in tables["tubes"] if t["name"] != "other"]
    with pytest.raises(ReplayError, match="unknown tube 'other'"):
        Store.load(tables, clock=clock)


def test_rows_share_no_history_with_the_live_tasks(clock):
    store = Store(clock=clock)
    store.create_tube("dead", "fifo")
    tube = store.create_tube("jobs", "fifo", max_attempts=1, dead_letter="dead")
    tube.put("x")
    tube.release(tube.take(timeout=0).id)
    (row,) = store.dump_tables()["tasks"].rows
    history = row[FIELDS.index("history")]
    assert history and history[0]["tube"] == "jobs"
    history[0]["tube"] = "changed"
    assert store.tube("dead").tasks()[0].history[0]["tube"] == "jobs"


def test_restored_tasks_take_no_more_memory_than_live_ones(clock):
    """Recovery used to set every field of a task at once, which made CPython give each
    recovered task a full instance dict (~3x the memory of a live task)."""
    import tracemalloc

    n = 20_000
    tracemalloc.start()
    try:
        store = Store(clock=clock)
        tube = store.create_tube("jobs", "fifottl")
        for _ in range(n):
            tube.put(None)
        for _ in range(n // 2):  # half of them taken and released once
            tube.release(tube.take(timeout=0).id)
        live, _peak = tracemalloc.get_traced_memory()
        tables = store.dump_tables()
        before, _peak = tracemalloc.get_traced_memory()
        restored = Store.load(tables, clock=clock)
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(restored.tube("jobs").tasks(limit=None)) == n
    assert (after - before) <= 1.2 * live


def test_a_driver_with_load_indexes_the_ready_tasks_in_bulk(clock):
    """The optional driver method load(tasks): the same state as one changed() per task."""
    import heapq

    from queues.drivers.fifottl import FifoTtl
    from queues.drivers.registry import Registry

    calls = []

    class BulkFifoTtl(FifoTtl):
        def load(self, tasks):
            calls.append(len(tasks))
            ready = self._ready.ready
            for task in tasks:
                task._entry = entry = (task.pri, task.id, task)
                ready.heap.append(entry)
            heapq.heapify(ready.heap)
            ready.live += len(tasks)
            ttl = self._deadlines.ttl
            ttl.heap.extend((t.expires_at, t.id, t) for t in tasks if t.expires_at is not None)
            heapq.heapify(ttl.heap)
            ttl.live = len(ttl.heap)
            return ttl.heap[0][0] if ttl.heap else None

    store, taken = _filled(clock)
    drivers = Registry()
    drivers.register(BulkFifoTtl, replace=True)
    bulk = Store.load(store.dump_tables(), clock=clock, drivers=drivers)
    plain = Store.load(store.dump(), clock=clock)
    assert calls == [len(store.tube("jobs").tasks(state=READY))]
    assert bulk.dump() == plain.dump() == store.dump()
    assert [t.id for t in bulk.tube("jobs").tasks()] == [t.id for t in plain.tube("jobs").tasks()]
    assert bulk._next_id == plain._next_id and bulk._wake_at == plain._wake_at
    for _ in range(3):
        assert bulk.tube("jobs").take(timeout=0).id == plain.tube("jobs").take(timeout=0).id
    clock.advance(200)  # every ttl lapses: both expire the same tasks
    bulk.tick()
    plain.tick()
    assert bulk.dump() == plain.dump()
