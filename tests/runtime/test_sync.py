"""Channel and Cond under the FakeClock: ordered event logs, no real sleeps."""
import gevent
import pytest

from fiberapp.runtime.errors import FiberCancelled
from fiberapp.runtime.sync import Channel, Cond


def test_rendezvous_put_waits_for_a_reader(rt, clock):
    ch = Channel(0, clock=clock)
    log = []

    def writer():
        log.append(("put", ch.put("m1")))

    w = rt.spawn(writer, name="writer")
    gevent.idle()
    assert log == [] and ch.has_writers() and not ch.has_readers()
    assert ch.is_full() and ch.is_empty() and ch.count() == 0
    assert ch.get() == "m1"
    w.join()
    assert log == [("put", True)] and not ch.has_writers()


def test_rendezvous_get_waits_for_a_writer(rt, clock):
    ch = Channel(clock=clock)
    r = rt.spawn(ch.get, name="reader")
    gevent.idle()
    assert ch.has_readers() and not ch.has_writers()
    assert ch.put("x") is True  # handed to the waiting reader without yielding
    assert not ch.has_readers()
    assert r.join() == "x"


def test_buffered_channel_fifo_and_full(rt, clock):
    ch = Channel(2, clock=clock)
    assert ch.put(1) and ch.put(2)
    assert ch.is_full() and ch.count() == 2
    assert ch.put(3, timeout=0) is False  # full: a zero timeout never waits
    log = []
    w = rt.spawn(lambda: log.append(ch.put(3)), name="w3")
    gevent.idle()
    assert ch.has_writers() and log == []
    assert ch.get() == 1  # frees a slot: the waiting writer's message moves in
    w.join()
    assert log == [True] and ch.count() == 2
    assert [ch.get(), ch.get()] == [2, 3]
    assert ch.get(timeout=0) is None


def test_timeouts_follow_the_clock(rt, clock):
    ch = Channel(1, clock=clock)
    ch.put("fill")
    log = []

    def timed_put():
        log.append(("put", ch.put("late", timeout=2), clock.monotonic()))

    def timed_get(c):
        log.append(("get", c.get(timeout=5), clock.monotonic()))

    empty = Channel(0, clock=clock)
    t0 = clock.monotonic()
    rt.spawn(timed_put, name="tp")
    rt.spawn(timed_get, empty, name="tg")
    gevent.idle()
    assert ch.has_writers() and empty.has_readers()
    clock.advance(2)
    assert not ch.has_writers() and empty.has_readers()
    clock.advance(3)
    assert not empty.has_readers()
    assert log == [("put", False, t0 + 2), ("get", None, t0 + 5)]
    assert ch.count() == 1 and ch.get() == "fill"  # the timed-out message was not added


def test_close_wakes_everyone_and_keeps_buffered_messages(rt, clock):
    full = Channel(1, clock=clock)
    full.put("kept")
    empty = Channel(0, clock=clock)
    log = []
    rt.spawn(lambda: log.append(("w", full.put("lost"))), name="w")
    rt.spawn(lambda: log.append(("r", empty.get())), name="r")
    gevent.idle()
    full.close()
    empty.close()
    gevent.idle()
    assert sorted(log) == [("r", None), ("w", False)]
    assert full.is_closed() and not full.has_writers() and not empty.has_readers()
    assert full.put("x") is False
    assert full.get() == "kept" and full.get() is None


def test_iterating_a_channel_until_closed(rt, clock):
    ch = Channel(0, clock=clock)
    got = rt.spawn(lambda: list(ch), name="consumer")
    for i in range(3):
        assert ch.put(i)
    ch.close()
    assert got.join() == [0, 1, 2]


def test_cancelled_reader_does_not_lose_a_handed_message(rt, clock):
    ch = Channel(0, clock=clock)
    a = rt.spawn(ch.get, name="a")
    b = rt.spawn(ch.get, name="b")
    gevent.idle()
    a.cancel()  # the cancel is queued for "a"...
    assert ch.put("precious")  # ...then the message is handed to "a" (the longest reader)
    with pytest.raises(FiberCancelled):
        a.join()
    assert b.join() == "precious"  # "a" passed it on while unwinding


def test_message_handed_before_the_cancel_is_received(rt, clock):
    ch = Channel(0, clock=clock)
    a = rt.spawn(ch.get, name="a")
    gevent.idle()
    assert ch.put("first")
    a.cancel()  # arrives after the hand-over: get() has already returned
    assert a.join() == "first"


def test_cancelled_writer_withdraws_its_message(rt, clock):
    ch = Channel(0, clock=clock)
    w = rt.spawn(ch.put, "withdrawn", name="w")
    gevent.idle()
    w.cancel()
    with pytest.raises(FiberCancelled):
        w.join()
    assert not ch.has_writers() and ch.get(timeout=0) is None


def test_bad_arguments_are_typed_errors():
    with pytest.raises(ValueError):
        Channel(-1)
    with pytest.raises(ValueError):
        Channel(1.5)
    with pytest.raises(TypeError):
        Channel(1).get(timeout="soon")


def test_cond_signal_is_fifo_and_broadcast_wakes_all(rt, clock):
    cond = Cond(clock=clock)
    log = []

    def waiter(i):
        log.append((i, cond.wait()))

    for i in range(4):
        rt.spawn(waiter, i, name=f"w{i}")
    gevent.idle()
    assert cond.waiters() == 4
    cond.signal()
    gevent.idle()
    cond.signal()
    gevent.idle()
    assert log == [(0, True), (1, True)]
    cond.broadcast()
    gevent.idle()
    assert log == [(0, True), (1, True), (2, True), (3, True)]
    cond.signal()  # nobody waiting: nothing happens
    assert cond.waiters() == 0


def test_cond_wait_timeout(rt, clock):
    cond = Cond(clock=clock)
    log = []
    rt.spawn(lambda: log.append(("short", cond.wait(1), clock.monotonic())), name="short")
    rt.spawn(lambda: log.append(("long", cond.wait(10), clock.monotonic())), name="long")
    gevent.idle()
    t0 = clock.monotonic()
    clock.advance(1)
    assert log == [("short", False, t0 + 1)] and cond.waiters() == 1
    clock.advance(1)
    cond.signal()
    gevent.idle()
    assert log[1] == ("long", True, t0 + 2)
    assert cond.wait(0) is False


def test_signal_to_a_cancelled_waiter_is_passed_on(rt, clock):
    cond = Cond(clock=clock)
    a = rt.spawn(cond.wait, name="a")
    b = rt.spawn(cond.wait, name="b")
    gevent.idle()
    a.cancel()
    cond.signal()  # goes to "a", which is cancelled before it can return
    with pytest.raises(FiberCancelled):
        a.join()
    assert b.join() is True
