"""What the hot operations log, and that records of the older form still replay; the
encoded hot ops (queues.persist.record.OpRecords) are the packer's bytes."""
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiberapp.runtime.clock import FakeClock
from queues.errors import QueueError
from queues.persist.record import OpRecords
from queues.persist.store_adapter import QueueStoreAdapter
from queues.store import Store
from tests.queues.conftest import EncodedRecordingJournal, RecordingJournal, replay


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


# -- encoded hot ops (queues.persist.record.OpRecords) ----------------------------------------

_pack = msgpack.Packer(use_bin_type=True).pack
_names = st.text(min_size=1, max_size=40)
_ids = st.one_of(st.integers(0, 300), st.integers(65000, 70000), st.integers(0, 2**64 - 1))
_times = st.one_of(st.floats(allow_nan=False), st.integers(0, 10**6))


@settings(max_examples=300, deadline=None)
@given(name=_names, tid=_ids, data=st.one_of(st.binary(max_size=300), st.text(max_size=300),
                                             st.sampled_from([b"b" * 65535, b"b" * 65536, "s" * 65535,
                                                              "s" * 65536, "é" * 200, 7, None])),
       session=_names, at=_times)
def test_op_records_are_the_packers_bytes(name, tid, data, session, at):
    records = OpRecords(name)
    assert records.put(tid, data, at) == _pack({"op": "put", "tube": name, "id": tid, "created_at": at,
                                                "data": data})
    assert records.take(tid, session, at) == _pack({"op": "take", "tube": name, "id": tid,
                                                    "taken_at": at, "session": session})
    assert records.ack(tid) == _pack({"op": "ack", "tube": name, "id": tid})


def _script(store, clock, first_id):
    """Puts, takes and acks on a tube of every driver, with ids from first_id on; returns
    the store's dump."""
    store._next_id = first_id  # to cross msgpack's int forms (fixint, uint 8/16/32) quickly
    tubes = [store.create_tube(d, d) for d in ("fifo", "fifottl", "limfifottl", "utube", "utubettl")]
    tubes.append(store.create_tube("ttl", "fifottl", ttl=60, ttr=30))
    for i in range(8):
        for tube in tubes:
            tube.put(b"b%d" % i if i % 3 else "s%d" % i, **({"utube": str(i % 2)} if "utube" in tube.name else {}))
            clock.advance(0.125)
        for tube in tubes:
            task = tube.take(timeout=0)
            if i % 2:
                tube.ack(task.id)
            else:
                tube.release(task.id)
    tubes[0].put(b"x" * 300)
    tubes[0].ack(tubes[0].take(timeout=0).id)
    return store.dump()


@pytest.mark.parametrize("first_id", [1, 120, 250, 65530, 2**32 - 20])
def test_a_journal_taking_encoded_ops_gets_the_same_records(first_id):
    clock_a, clock_b = FakeClock(), FakeClock()
    plain, encoded = RecordingJournal(), EncodedRecordingJournal()
    dump_a = _script(Store(clock=clock_a, journal=plain), clock_a, first_id)
    store_b = Store(clock=clock_b, journal=None)
    store_b.attach_journal(encoded, op_records=OpRecords)
    dump_b = _script(store_b, clock_b, first_id)
    assert dump_a == dump_b
    assert encoded.records == plain.records
    # encoded: the puts of the 3 tubes without default fields, the takes of the 5 without
    # a ttr, every ack (4 rounds x 6 tubes), and the last put, take and ack
    assert encoded.encoded == 3 * 8 + 5 * 8 + 4 * 6 + 3
    assert replay(encoded.ops(), clock_b).dump() == dump_b


def test_a_failed_encoded_log_applies_nothing():
    store = Store(clock=FakeClock(), journal=None)
    journal = EncodedRecordingJournal()
    store.attach_journal(journal, op_records=OpRecords)
    tube = store.create_tube("q", "fifo")
    before = store.dump()
    journal.fail_next = QueueError("disk full")
    with pytest.raises(QueueError):
        tube.put(b"x")
    assert store.dump() == before
    task = tube.put(b"x")
    journal.fail_next = QueueError("disk full")
    with pytest.raises(QueueError):
        tube.take(timeout=0)
    task = tube.take(timeout=0)
    journal.fail_next = QueueError("disk full")
    with pytest.raises(QueueError):
        tube.ack(task.id)
    assert tube.peek(task.id).state == "taken"


def test_the_adapter_gives_encoders_only_to_a_journal_that_takes_encoded_ops():
    adapter = QueueStoreAdapter(FakeClock())
    for journal, encoded in ((RecordingJournal(), False), (EncodedRecordingJournal(), True)):
        store = adapter.new()
        store.create_tube("early", "fifo")  # made before the journal is attached
        adapter.attach(store, journal)
        late = store.create_tube("late", "fifo")
        assert (store.tube("early")._records is not None) is encoded
        assert (late._records is not None) is encoded
        late.put(b"x")
        assert getattr(journal, "encoded", 0) == (1 if encoded else 0)
        assert journal.ops()[-1] == {"op": "put", "tube": "late", "id": 1, "data": b"x",
                                     "created_at": store.clock.monotonic()}


def test_equal_sessions_of_other_types_are_each_packed_as_themselves():
    """True, 1 and 1.0 are one dict key but three msgpack values: a cache of packed session
    names must not give one the other's bytes (the in-process API takes any session)."""
    enc = OpRecords("q")
    for session in ("s1", True, 1, 1.0, "s1", 0, False, 0.0, -0.0, None, 1, True):
        op = {"op": "take", "tube": "q", "id": 7, "taken_at": 1.5, "session": session}
        assert enc.take(7, session, 1.5) == msgpack.packb(op, use_bin_type=True), session
