"""Fiber lifecycle, registry, cancel, join and storage (FakeClock; no real sleeps)."""
import gevent
import pytest

from fiberapp.runtime.errors import (Cancelled, FiberappError, FiberCancelled, FiberError,
                                     FiberTimeout)
from fiberapp.runtime.fiber import Fiber, current_fiber


def test_statuses_through_a_lifecycle(rt, clock):
    seen = []

    def body():
        me = current_fiber()
        seen.append(("inside", me.status))
        rt.sleep(5)
        seen.append(("woke", me.status))
        return "done"

    f = rt.spawn(body, name="worker")
    seen.append(("spawned", f.status))
    gevent.idle()
    seen.append(("sleeping", f.status))
    clock.advance(5)
    assert f.join() == "done"
    seen.append(("joined", f.status))
    assert seen == [("spawned", "suspended"), ("inside", "running"), ("sleeping", "suspended"),
                    ("woke", "running"), ("joined", "dead")]


def test_registry_lists_live_fibers_and_counts_the_dead(rt, clock):
    a = rt.spawn(rt.sleep, 10, name="a")
    b = rt.spawn(rt.sleep, 20, name="b")
    c = rt.spawn(lambda: None, name="c")
    gevent.idle()
    assert [(f.id, f.name) for f in rt.fibers()] == [(a.id, "a"), (b.id, "b")]
    assert rt.find(a.id) is a and rt.find(c.id) is None
    assert a.id < b.id < c.id
    assert a.created_at == clock.time()
    clock.advance(10)
    assert a.status == "dead" and rt.fibers() == [b]
    stats = rt.stats()
    assert (stats["spawned"], stats["died"], stats["fibers"]) == (3, 2, 1)


def test_every_fiber_has_a_name(rt):
    def handler():
        return 1

    assert rt.spawn(handler).name == "handler"
    assert rt.spawn(lambda: 1).name == "<lambda>"
    with pytest.raises(FiberError):
        rt.spawn(handler, name="")
    with pytest.raises(FiberError):
        rt.spawn(handler, name="x" * 256)
    with pytest.raises(FiberError):
        rt.spawn(handler, name=5)
    with pytest.raises(FiberError):
        rt.spawn("not callable")
    assert issubclass(FiberError, FiberappError)


def test_join_returns_result_or_raises_the_fibers_error(rt):
    class Boom(RuntimeError):
        pass

    def fail():
        raise Boom("bad")

    ok = rt.spawn(lambda x, y=0: x + y, 2, y=3, name="ok")
    bad = rt.spawn(fail, name="bad")
    assert ok.join() == 5
    with pytest.raises(Boom, match="bad"):
        bad.join()
    with pytest.raises(Boom):  # joining again gives the same answer
        bad.join()
    assert rt.stats()["died"] == 2


def test_join_timeout_goes_through_the_clock(rt, clock):
    f = rt.spawn(rt.sleep, 10, name="slow")
    outcome = []

    def joiner(timeout):
        try:
            f.join(timeout)
            outcome.append(("joined", timeout, clock.monotonic()))
        except FiberTimeout:
            outcome.append(("timeout", timeout, clock.monotonic()))

    start = clock.monotonic()
    j1 = rt.spawn(joiner, 3, name="j3")
    j2 = rt.spawn(joiner, 30, name="j30")
    gevent.idle()
    clock.advance(3)
    clock.advance(7)
    j1.join()
    j2.join()
    assert outcome == [("timeout", 3, start + 3), ("joined", 30, start + 10)]
    with pytest.raises(FiberTimeout):
        rt.spawn(rt.sleep, 1, name="x").join(0)


def test_fiber_cannot_join_itself(rt):
    def selfjoin():
        current_fiber().join()

    with pytest.raises(FiberError):
        rt.spawn(selfjoin, name="selfjoin").join()


def test_cancel_is_delivered_at_the_next_yield_and_escapes_except_exception(rt, clock):
    log = []

    def victim():
        log.append("start")
        try:
            rt.sleep(100)
        except Exception:  # must not catch cancellation
            log.append("swallowed")
        finally:
            log.append("finally")
        log.append("after")

    f = rt.spawn(victim, name="victim")
    gevent.idle()
    f.cancel()
    log.append("cancel returned")
    with pytest.raises(FiberCancelled):
        f.join()
    assert log == ["start", "cancel returned", "finally"]
    assert f.status == "dead" and rt.find(f.id) is None
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


def test_cancel_does_not_interrupt_a_fiber_until_it_yields(rt):
    log = []

    def busy():
        log.append("a")
        other.cancel()  # cancel another fiber, and ourselves, mid-run
        current_fiber().cancel()
        log.append("b")  # still running: no yield yet
        gevent.sleep(0)
        log.append("never")

    f = rt.spawn(busy, name="busy")  # scheduled first, so it runs before "other"
    other = rt.spawn(lambda: log.append("other ran"), name="other")
    with pytest.raises(FiberCancelled):
        f.join()
    with pytest.raises(FiberCancelled):
        other.join()
    assert log == ["a", "b"]  # "other" was cancelled before it ever ran


def test_cancel_by_id(rt, clock):
    f = rt.spawn(rt.sleep, 100, name="target")
    gevent.idle()
    assert rt.cancel(f.id) is True
    with pytest.raises(FiberCancelled):
        f.join()
    assert rt.cancel(f.id) is False  # dead fibers leave the registry
    assert rt.cancel(12345) is False


def test_caught_cancel_is_raised_again_by_sleep(rt, clock):
    log = []

    def stubborn():
        try:
            rt.sleep(100)
        except Cancelled:
            log.append("caught")
        rt.sleep(1)
        log.append("never")

    f = rt.spawn(stubborn, name="stubborn")
    gevent.idle()
    f.cancel()
    with pytest.raises(FiberCancelled):
        f.join()
    assert log == ["caught"] and f.cancelled


def test_cancel_before_start_and_after_death(rt):
    f = rt.spawn(lambda: 1, name="never")
    f.cancel()
    assert f.status == "dead" and rt.fibers() == []
    with pytest.raises(FiberCancelled):
        f.join()
    g = rt.spawn(lambda: 2, name="done")
    assert g.join() == 2
    g.cancel()  # no-op
    assert g.join() == 2
    assert rt.stats()["died"] == 2


def test_fiber_local_storage_is_private(rt, clock):
    seen = {}

    def body(tag):
        current_fiber().storage["tag"] = tag
        rt.sleep(1)
        seen[tag] = dict(current_fiber().storage)

    fibers = [rt.spawn(body, t, name=f"s{t}") for t in ("x", "y")]
    gevent.idle()
    clock.advance(1)
    for f in fibers:
        f.join()
    assert seen == {"x": {"tag": "x"}, "y": {"tag": "y"}}


def test_current_fiber_outside_fibers_is_none(rt):
    assert current_fiber() is None
    assert gevent.spawn(current_fiber).get() is None
    f = rt.spawn(current_fiber, name="me")
    assert f.join() is f and isinstance(f, Fiber)


def test_stop_cancels_everything_and_reports_stragglers(clock):
    from fiberapp.runtime.fiber import Runtime

    rt = Runtime(clock=clock, watchdog_limit=0)
    log = []

    def polite(i):
        try:
            rt.sleep(1000)
        finally:
            log.append(i)

    def stubborn():
        while True:
            try:
                rt.sleep(1000)
            except Cancelled:
                log.append("ignored")
                clock.sleep(1000)  # a raw wait that does not re-check cancellation

    fibers = [rt.spawn(polite, i, name=f"p{i}") for i in range(3)]
    s = rt.spawn(stubborn, name="stubborn")
    gevent.idle()
    stopper = gevent.spawn(rt.stop, 5)
    gevent.idle()
    clock.advance(5)
    left = stopper.get()
    assert left == [s]
    assert sorted(log[:3]) == [0, 1, 2] and log[3:] == ["ignored"]
    assert all(f.status == "dead" for f in fibers)
    s.kill(block=False)
    gevent.idle()


def test_a_cancelled_fiber_cannot_block_again(rt, clock):
    from fiberapp.runtime.sync import Channel, Cond

    ch, cond = Channel(clock=clock), Cond(clock=clock)
    log = []

    def stubborn():
        for label, wait in (("sleep", lambda: rt.sleep(100)), ("get", ch.get), ("put", lambda: ch.put(1)),
                            ("wait", cond.wait), ("join", other.join)):
            try:
                wait()
            except Cancelled:
                log.append(label)

    other = rt.spawn(rt.sleep, 1000, name="other")
    f = rt.spawn(stubborn, name="stubborn")
    gevent.idle()
    f.cancel()
    f.join()  # it swallowed every Cancelled and returned
    assert log == ["sleep", "get", "put", "wait", "join"]
    assert not ch.has_readers() and not ch.has_writers() and cond.waiters() == 0


def test_stop_also_cancels_fibers_spawned_while_stopping(clock):
    from fiberapp.runtime.fiber import Runtime

    rt = Runtime(clock=clock, watchdog_limit=0)
    log = []

    def parent():
        try:
            rt.sleep(1000)
        finally:
            rt.spawn(child, name="child")  # e.g. a cleanup task started on the way out

    def child():
        try:
            rt.sleep(1000)
        finally:
            log.append("child cancelled")

    rt.spawn(parent, name="parent")
    gevent.idle()
    assert rt.stop(timeout=10) == []
    assert log == ["child cancelled"] and rt.fibers() == []


def test_stop_from_inside_a_fiber_spares_the_caller(clock):
    from fiberapp.runtime.fiber import Runtime

    rt = Runtime(clock=clock, watchdog_limit=0)
    others = [rt.spawn(rt.sleep, 1000, name=f"o{i}") for i in range(3)]

    def shutdown():
        left = rt.stop(timeout=10)
        return left, current_fiber().status

    sup = rt.supervise(shutdown, name="shutdown")
    assert sup.fiber.join() == ([], "running")
    assert all(o.status == "dead" for o in others)


def test_backtrace_shows_where_a_fiber_waits(rt, clock):
    def parked_in_here():
        rt.sleep(10)

    def me():
        return current_fiber().backtrace()

    f = rt.spawn(parked_in_here, name="parked")
    assert f.backtrace() == ""  # not started yet
    gevent.idle()
    text = f.backtrace()
    assert "parked_in_here" in text and "rt.sleep(10)" in text
    assert "me" in rt.spawn(me, name="me").join().splitlines()[-2]
    clock.advance(10)
    f.join()
    assert f.backtrace() == ""


def test_fibers_killed_by_plain_gevent_calls_leave_the_registry(rt):
    f = rt.spawn(lambda: 1, name="unstarted")
    g = rt.spawn(lambda: 2, name="unstarted-too")
    gevent.killall([f, g])  # bypasses Fiber.cancel; neither ever runs
    assert f.status == "dead"
    assert rt.find(f.id) is None
    assert rt.fibers() == []
    stats = rt.stats()
    assert (stats["fibers"], stats["spawned"], stats["died"]) == (0, 2, 2)
