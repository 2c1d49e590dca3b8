"""utube / utubettl: one taken task per sub-queue key."""
import gevent
import gevent.event
import pytest

from queues.states import READY

pytestmark = pytest.mark.parametrize("driver", ("utube", "utubettl"))


def test_each_key_is_serialised(store, driver):
    tube = store.create_tube("t", driver)
    a1 = tube.put("a1", utube="A")
    a2 = tube.put("a2", utube="A")
    b1 = tube.put("b1", utube="B")
    assert tube.take(timeout=0).id == a1.id
    assert tube.take(timeout=0).id == b1.id
    assert tube.take(timeout=0) is None, "a2 waits until a1 is acked"
    tube.ack(a1.id)
    assert tube.take(timeout=0).id == a2.id


def test_ack_wakes_a_waiter_for_the_next_task_of_the_key(store, driver):
    tube = store.create_tube("t", driver)
    a1 = tube.put("a1", utube="A")
    tube.put("a2", utube="A")
    tube.take(timeout=0)
    got = []
    hold = gevent.event.Event()

    def consumer():
        got.append(tube.take(timeout=30))
        hold.wait()

    g = gevent.spawn(consumer)
    gevent.idle()
    assert got == []
    tube.ack(a1.id)
    gevent.idle()
    gevent.sleep(0)
    assert got and got[0].data == "a2"
    hold.set()
    g.join(timeout=1)


def test_buried_task_does_not_block_its_key(store, driver):
    tube = store.create_tube("t", driver)
    a1 = tube.put("a1", utube="A")
    a2 = tube.put("a2", utube="A")
    tube.take(timeout=0)
    tube.bury(a1.id)
    assert tube.take(timeout=0).id == a2.id


def test_release_keeps_key_order(store, driver):
    tube = store.create_tube("t", driver)
    a1 = tube.put("a1", utube="A")
    tube.put("a2", utube="A")
    tube.take(timeout=0)
    tube.release(a1.id)
    assert a1.state == READY
    assert tube.take(timeout=0).id == a1.id


def test_many_keys_round_robin_by_id(store, driver):
    tube = store.create_tube("t", driver)
    ids = {}
    for i in range(3):
        for key in "XYZ":
            ids.setdefault(key, []).append(tube.put(f"{key}{i}", utube=key).id)
    first = [tube.take(timeout=0) for _ in range(4)]
    assert [t.data for t in first[:3]] == ["X0", "Y0", "Z0"] and first[3] is None
    for t in first[:3]:
        tube.ack(t.id)
    assert sorted(tube.take(timeout=0).data for _ in range(3)) == ["X1", "Y1", "Z1"]


def test_index_stays_bounded_under_churn(store, driver):
    """Stale index entries are dropped as they surface: memory stays O(live tasks) (an
    earlier version re-posted a key's head on every cycle and take became O(cycles))."""
    tube = store.create_tube("t", driver)
    for i in range(2000):
        tube.put(i, utube="one")
        tube.ack(tube.take(timeout=0).id)
    index = tube.driver._ready
    assert len(index.avail) <= 2 and sum(len(q.heap) for q in index.queues.values()) <= 2
