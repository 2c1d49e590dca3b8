"""Supervised fibers under the FakeClock: restarts, backoff, clean return, cancel."""
import gevent
import pytest

from fiberapp.runtime.errors import FiberCancelled, FiberError, FiberTimeout


class Flaky(Exception):
    pass


def test_restarts_with_exponential_backoff_until_a_clean_return(rt, clock):
    log = []
    t0 = clock.monotonic()

    def work():
        n = len(log)
        log.append(clock.monotonic() - t0)
        if n < 4:
            raise Flaky(n)
        return "ok"

    sup = rt.supervise(work, name="flaky", backoff=(1.0, 3.0))
    gevent.idle()
    assert log == [0.0] and sup.status == "backoff" and sup.restarts == 1
    assert sup.next_start == t0 + 1.0
    clock.advance(100)
    # Delays 1, 2, 3 (capped), 3: starts at 0, 1, 3, 6, 9.
    assert log == [0.0, 1.0, 3.0, 6.0, 9.0]
    assert sup.join() == "ok" and sup.status == "done"
    assert sup.restarts == 4 and rt.stats()["supervisor_restarts"] == 4
    assert isinstance(sup.last_error, Flaky)
    assert rt.supervisors() == [] and sup.fiber.name == "flaky"


def test_each_incarnation_is_a_new_fiber_with_the_same_name(rt, clock):
    ids = []

    def work():
        ids.append(rt.find(sup.fiber.id).id)
        raise Flaky()

    sup = rt.supervise(work, name="svc", backoff=(1, 1))
    clock.advance(2)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [f.name for f in rt.fibers()] == []  # waiting in backoff: no live incarnation
    sup.cancel()
    with pytest.raises(FiberCancelled):
        sup.join()


def test_a_long_healthy_run_resets_the_backoff(rt, clock):
    starts = []

    def work(run_for):
        starts.append(clock.monotonic())
        rt.sleep(run_for(len(starts)))
        raise Flaky()

    # runs 1 and 2 die at once, run 3 lives 10 s (>= backoff max), run 4 dies at once
    sup = rt.supervise(work, lambda n: 10 if n == 3 else 0, name="resets", backoff=(1, 4))
    clock.advance(1 + 2 + 10 + 1)
    t = [round(s - starts[0], 6) for s in starts]
    assert t[:4] == [0, 1, 3, 14]  # after the healthy run the delay is back to 1
    sup.cancel()


def test_cancel_stops_supervision_for_good(rt, clock):
    runs = []

    def work():
        runs.append(clock.monotonic())
        rt.sleep(1000)

    sup = rt.supervise(work, name="svc")
    gevent.idle()
    f = sup.fiber
    sup.cancel()
    with pytest.raises(FiberCancelled):
        sup.join()
    clock.advance(1000)
    assert len(runs) == 1 and f.status == "dead" and sup.status == "cancelled"
    assert rt.supervisors() == [] and rt.fibers() == []


def test_cancelling_the_fiber_itself_ends_supervision(rt, clock):
    sup = rt.supervise(rt.sleep, 100, name="svc")
    gevent.idle()
    sup.fiber.cancel()
    with pytest.raises(FiberCancelled):
        sup.join()
    assert sup.restarts == 0


def test_cancel_during_backoff_disarms_the_restart(rt, clock):
    runs = []

    def work():
        runs.append(1)
        raise Flaky()

    sup = rt.supervise(work, name="svc", backoff=(5, 5))
    gevent.idle()
    assert sup.status == "backoff"
    sup.cancel()
    clock.advance(60)
    assert runs == [1] and clock.pending() == 0


def test_never_and_always_policies(rt, clock):
    once = rt.supervise(lambda: 1 / 0, name="once", restart="never")
    with pytest.raises(ZeroDivisionError):
        once.join()
    assert once.status == "failed" and once.restarts == 0

    count = []
    always = rt.supervise(lambda: count.append(1) or len(count), name="loop",
                          restart="always", backoff=(2, 8))
    clock.advance(6)  # clean returns restart after backoff min: runs at 0, 2, 4, 6
    assert len(count) == 4 and always.result == 4
    always.cancel()


def test_join_timeout_and_bad_arguments(rt, clock):
    sup = rt.supervise(rt.sleep, 100, name="svc")
    waiter = gevent.spawn(sup.join, 5)
    gevent.idle()
    clock.advance(5)
    with pytest.raises(FiberTimeout):
        waiter.get()
    with pytest.raises(FiberError):
        rt.supervise(rt.sleep, 1, name="x", restart="sometimes")
    with pytest.raises(FiberError):
        rt.supervise(rt.sleep, 1, name="x", backoff=(5, 1))
    with pytest.raises(FiberError):
        rt.supervise(rt.sleep, 1, name="x", backoff="fast")
    sup.cancel()


def test_stop_cancels_supervisors_first(clock):
    from fiberapp.runtime.fiber import Runtime

    rt = Runtime(clock=clock, watchdog_limit=0)
    runs = []

    def work():
        runs.append(1)
        raise Flaky()

    sup = rt.supervise(work, name="svc", backoff=(1, 1))
    gevent.idle()
    assert rt.stop(timeout=1) == []
    clock.advance(10)
    assert runs == [1] and sup.status == "cancelled"
