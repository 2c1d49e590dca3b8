"""What the hot operations log, and that records of the older form still replay."""
from fiberapp.runtime.clock import FakeClock
from queues.store import Store
from tests.queues.conftest import RecordingJournal, replay


def _take_ops(journal):
    return [op for op in journal.ops() if op["op"] == "take"]


def test_take_of_a_task_without_ttr_leaves_ttr_at_out(store, journal):
    tube = store.create_tube("q", "fifo")
    tube.put(b"a")
    tube.take(timeout=0)
    (op,) = _take_ops(journal)
    assert "ttr_at" not in op
    assert set(op) == {"op", "tube", "id", "session", "taken_at"}


def test_take_of_a_task_with_ttr_logs_its_deadline(store, journal, clock):
    tube = store.create_tube("q", "fifottl", ttr=30)
    tube.put(b"a")
    clock.advance(2)
    task = tube.take(timeout=0)
    (op,) = _take_ops(journal)
    assert op["ttr_at"] == task.ttr_at == clock.monotonic() + 30


def test_take_many_logs_the_same_take_records(store, journal):
    # take_many goes through Store._take_one, not Tube.take's fast path
    tube = store.create_tube("q", "fifo")
    ttl_tube = store.create_tube("t", "fifottl", ttr=5)
    tube.put(b"a")
    tube.put(b"b")
    ttl_tube.put(b"c")
    tube.take_many(2, timeout=0)
    ttl_tube.take_many(1, timeout=0)
    ops = _take_ops(journal)
    assert ["ttr_at" in op for op in ops] == [False, False, True]


def test_take_records_with_ttr_at_none_replay_as_before():
    # Records written before the take op left ttr_at out carry "ttr_at": None.
    clock = FakeClock()
    journal = RecordingJournal()
    store = Store(clock=clock, journal=journal)
    for driver in ("fifo", "fifottl", "utube"):
        tube = store.create_tube(driver, driver)
        for i in range(3):
            tube.put(b"x%d" % i, **({"utube": str(i)} if driver == "utube" else {}))
        tube.take(timeout=0)
        tube.ack(tube.take(timeout=0).id)
    new_form = journal.ops()
    old_form = [dict(op, ttr_at=op.get("ttr_at")) if op["op"] == "take" else op for op in new_form]
    assert old_form != new_form
    assert replay(old_form, clock).dump() == replay(new_form, clock).dump() == store.dump()
