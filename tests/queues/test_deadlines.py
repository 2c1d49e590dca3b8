"""delay, ttr, ttl, touch and the ticker; time moves only through the FakeClock."""
import gevent
import gevent.event
import pytest

from queues import errors
from queues.states import BURIED, DELAYED, READY, TAKEN
from tests.queues.conftest import TTL_DRIVERS

pytestmark = pytest.mark.parametrize("driver", TTL_DRIVERS)


def test_ttr_lapse_returns_task_and_counts_attempt(store, clock, driver):
    tube = store.create_tube("t", driver)
    t = tube.put("x", ttr=10)
    tube.take(timeout=0)
    clock.advance(9.9)
    store.tick()
    assert t.state == TAKEN
    clock.advance(0.1)
    store.tick()
    assert t.state == READY and t.attempts == 1 and t.timeouts == 1
    assert tube.statistics()["calls"]["ttr_expired"] == 1
    with pytest.raises(errors.WrongState):
        tube.ack(t.id)
    assert tube.take(timeout=0).attempts == 2


def test_ttl_counts_from_ready_not_from_put(store, clock, driver):
    tube = store.create_tube("t", driver)
    t = tube.put("x", ttl=10, delay=5)
    assert t.state == DELAYED
    assert tube.take(timeout=0) is None
    clock.advance(5)
    store.tick()
    assert t.state == READY
    clock.advance(9.5)
    store.tick()
    assert tube.peek(t.id).state == READY
    clock.advance(0.5)
    store.tick()
    with pytest.raises(errors.NoSuchTask):
        tube.peek(t.id)
    stats = tube.statistics()
    assert stats["calls"]["ttl_expired"] == 1 and stats["tasks"]["done"] == 1


def test_taken_task_does_not_expire_under_its_consumer(store, clock, driver):
    tube = store.create_tube("t", driver)
    a = tube.put("a", ttl=5)
    tube.take(timeout=0)
    clock.advance(20)
    store.tick()
    assert a.state == TAKEN, "tarantool/queue #146: no expiry from under a consumer"
    assert tube.ack(a.id).state == "done"
    b = tube.put("b", ttl=5)
    tube.take(timeout=0)
    clock.advance(20)
    tube.release(b.id)  # its ttl passed while taken: applied now
    with pytest.raises(errors.NoSuchTask):
        tube.peek(b.id)
    c = tube.put("c", ttl=5, ttr=10)
    tube.take(timeout=0)
    clock.advance(10)
    store.tick()  # ttr lapses after the ttl: expired, not ready
    with pytest.raises(errors.NoSuchTask):
        tube.peek(c.id)
    assert tube.statistics()["calls"]["ttl_expired"] == 2


def test_touch_extends_running_ttr(store, clock, driver):
    tube = store.create_tube("t", driver, ttr=10)
    t = tube.put("x")
    tube.take(timeout=0)
    clock.advance(8)
    tube.touch(t.id, 5)
    clock.advance(6.9)  # 14.9 s after take, 15 with touch
    store.tick()
    assert t.state == TAKEN
    clock.advance(0.1)
    store.tick()
    assert t.state == READY
    assert tube.statistics()["calls"]["touch"] == 1


def keyed(driver, key):
    """Distinct sub-queues on utube drivers, so one taken task does not block the rest."""
    return {"utube": key} if driver.startswith("utube") else {}


def test_release_with_delay_and_new_priority(store, clock, driver):
    tube = store.create_tube("t", driver)
    a = tube.put("a", pri=5, **keyed(driver, "a"))
    b = tube.put("b", pri=5, **keyed(driver, "b"))
    tube.take(timeout=0)
    tube.release(a.id, delay=3, pri=1)
    assert a.state == DELAYED
    assert tube.take(timeout=0).id == b.id
    clock.advance(3)
    store.tick()
    assert a.state == READY and a.pri == 1
    assert tube.take(timeout=0).id == a.id


def test_priorities_order_takes(store, driver):
    tube = store.create_tube("t", driver)
    low = tube.put("low", pri=10, **keyed(driver, "l"))
    high = tube.put("high", pri=0, **keyed(driver, "h"))
    mid = tube.put("mid", pri=5, **keyed(driver, "m"))
    got = [tube.take(timeout=0).id for _ in range(3)]
    assert got == [high.id, mid.id, low.id]


def test_buried_tasks_expire_and_kick_task_delayed(store, clock, driver):
    tube = store.create_tube("t", driver)
    a = tube.put("a", ttl=5)
    tube.bury(a.id)
    clock.advance(5)
    store.tick()
    with pytest.raises(errors.NoSuchTask):
        tube.peek(a.id)
    b = tube.put("b", delay=100, ttl=10)
    tube.kick_task(b.id)
    assert b.state == READY and b.expires_at == clock.monotonic() + 10


def test_ticker_fiber_drives_deadlines(store, clock, driver):
    tube = store.create_tube("t", driver)
    store.start()
    try:
        got = []
        hold = gevent.event.Event()

        def consumer():
            got.append(tube.take(timeout=60))
            hold.wait()

        g = gevent.spawn(consumer)
        gevent.idle()
        tube.put("later", delay=7)
        clock.advance(6.5)
        assert got == []
        clock.advance(0.5)
        assert got and got[0].data == "later"
        t = tube.put("ttr", ttr=2, **keyed(driver, "other"))
        taken = tube.take(timeout=0)
        assert taken.id == t.id
        clock.advance(2)
        assert t.state == READY, "the ticker returned it without anyone calling tick()"
        hold.set()
        g.join(timeout=1)
    finally:
        store.stop()


def test_waiting_take_without_ticker_still_sees_delay(store, clock, driver):
    tube = store.create_tube("t", driver)
    tube.put("later", delay=3)
    got = []
    g = gevent.spawn(lambda: got.append(tube.take(timeout=10)))
    gevent.idle()
    clock.advance(3)
    g.join(timeout=1)
    assert got and got[0].data == "later"


def test_release_orphans_counts_the_attempt(store, driver):
    tube = store.create_tube("t", driver)
    t = tube.put("x")
    tube.take(timeout=0)
    assert store.release_orphans() == 1
    assert t.state == READY and t.attempts == 1 and t.releases == 1


def test_to_dict_is_wall_clock(store, clock, driver):
    tube = store.create_tube("t", driver)
    t = tube.put(b"\x00bytes", delay=2)
    d = t.to_dict()
    assert d["created_at"] == pytest.approx(clock.time())
    assert d["ready_at"] == pytest.approx(clock.time() + 2)
    assert d["data"] == b"\x00bytes" and d["state"] == DELAYED
