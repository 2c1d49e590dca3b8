"""Store-level behaviour: take_any, capacity back-pressure, sessions, drop, custom drivers."""
import gevent
import gevent.event
import pytest

from queues import errors
from queues.drivers.fifo import Fifo
from queues.states import READY, TAKEN


def test_take_any_takes_from_whichever_tube_has_a_task(store, clock):
    a = store.create_tube("a", "fifo")
    b = store.create_tube("b", "fifottl")
    b.put("from-b")
    assert store.take_any(["a", "b"], timeout=0).data == "from-b"
    a.put("a1")
    b.put("b2")
    assert store.take_any(["a", "b"], timeout=0).data == "a1", "list order when several have one"
    assert store.take_any(["b", "a"], timeout=0).data == "b2"
    got = []
    hold = gevent.event.Event()

    def consumer():
        got.append(store.take_any(["a", "b"], timeout=30))
        hold.wait()

    g = gevent.spawn(consumer)
    gevent.idle()
    b.put("late")
    gevent.idle()
    gevent.sleep(0)
    assert got and got[0].data == "late"
    assert not a._waiters and not b._waiters, "the waiter left every tube's queue"
    hold.set()
    g.join(timeout=1)
    with pytest.raises(errors.NoSuchTube):
        store.take_any(["a", "nope"], timeout=0)


def test_take_any_timeout(store, clock):
    store.create_tube("a", "fifo")
    store.create_tube("b", "fifo")
    got = []
    g = gevent.spawn(lambda: got.append(store.take_any(["a", "b"], timeout=3)))
    gevent.idle()
    clock.advance(3)
    g.join(timeout=1)
    assert got == [None]


def test_capacity_waits_without_polling(store, clock):
    tube = store.create_tube("t", "limfifottl", capacity=2)
    a = tube.put("a")
    tube.put("b")
    with pytest.raises(errors.TubeFull):
        tube.put("c")
    results = []
    g = gevent.spawn(lambda: results.append(tube.put("c", timeout=10)))
    gevent.idle()
    clock.advance(5)
    assert results == []
    assert clock.pending() == 1, "one timer for the waiting put, nothing polling"
    tube.delete(a.id)
    g.join(timeout=1)
    assert results and results[0].data == "c"
    g = gevent.spawn(lambda: tube.put("d", timeout=1))
    gevent.idle()
    clock.advance(1)
    with pytest.raises(errors.TubeFull):
        g.get(timeout=1)
    assert tube.statistics()["tasks"]["total"] == 2


def test_session_idle_listing_and_end(store, clock):
    tube = store.create_tube("t", "fifo")
    store.sessions.open("http-1")
    store.sessions.open("http-2")
    tube.put("x")
    t = tube.take(timeout=0, session="http-1")
    clock.advance(10)
    store.sessions.touch("http-2")
    assert store.sessions.idle(5) == ["http-1"]
    assert store.sessions.taken("http-1") == [t.id]
    with pytest.raises(errors.NotOwner):
        tube.ack(t.id, session="http-2")
    assert store.sessions.end("http-1") == 1
    assert t.state == READY and not store.sessions.exists("http-1")
    with pytest.raises(errors.NoSuchSession):
        store.sessions.touch("http-1")
    with pytest.raises(errors.InvalidName):
        store.sessions.open("bad name")


def test_custom_driver_registers_like_builtins(store):
    seen = []

    class Audited(Fifo):
        """fifo that records every change it is told about."""
        name = "audited"

        def __init__(self, options):
            super().__init__(options)
            inner = self.changed

            def changed(task, old):
                seen.append((task.id, old, task.state))
                return inner(task, old)

            self.changed = changed

    store.drivers.register(Audited)
    tube = store.create_tube("l", "audited")
    tube.put(1)
    assert tube.take(timeout=0).data == 1
    assert seen == [(1, None, READY), (1, READY, TAKEN)]
    with pytest.raises(errors.DriverError):
        store.drivers.register(Audited)  # the name is taken

    class Broken:
        name = "broken"

    with pytest.raises(errors.DriverError):
        store.drivers.register(Broken)
    with pytest.raises(errors.UnknownDriver):
        store.create_tube("x", "nope")


def test_error_classes_have_codes_and_statuses():
    seen = set()
    for cls in errors.all_errors():
        assert cls.code and cls.code == cls.code.lower() and " " not in cls.code
        assert 400 <= cls.http_status < 600
        seen.add(cls.code)
    assert {"no_such_tube", "no_such_task", "wrong_state", "not_owner", "tube_full",
            "draining", "task_too_large", "invalid_option"} <= seen


def test_dead_letter_into_missing_tube_buries(store):
    tube = store.create_tube("t", "fifo", max_attempts=1, dead_letter="gone")
    t = tube.put("x")
    tube.release(tube.take(timeout=0).id)
    assert tube.peek(t.id).state == "buried"


def test_ttr_lapse_past_max_attempts_dead_letters(store, clock):
    dlq = store.create_tube("dlq", "fifo")
    tube = store.create_tube("t", "fifottl", ttr=1, max_attempts=1, dead_letter="dlq")
    events = []
    dlq.on_task_change(lambda task, event: events.append(event))
    t = tube.put("x")
    tube.take(timeout=0)
    clock.advance(1)
    store.tick()
    moved = dlq.peek(t.id)
    assert moved.state == READY and moved.history[0]["timeouts"] == 1
    assert events == ["dead_letter"]
    assert tube.statistics()["tasks"]["total"] == 0 and tube.statistics()["calls"]["ttr_expired"] == 1


def test_data_edge_cases_are_typed_errors(store):
    tube = store.create_tube("t", "fifo")
    for bad in ("\ud800", {"k": "\udfff"}, {1: "int key"}, {"x": object()}, float("nan")):
        with pytest.raises(errors.InvalidData):
            tube.put(bad)
    assert tube.put("é" * 10).data == "é" * 10
    small = type(store)(max_task_size=8).create_tube("s", "fifo")
    with pytest.raises(errors.TaskTooLarge):
        small.put("é" * 5)  # 5 characters, 10 bytes in UTF-8
    assert small.put("e" * 8).data == "e" * 8
    assert tube.statistics()["tasks"]["total"] == 1
