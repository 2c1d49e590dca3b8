"""A snapshot restore indexes each tube's tasks in bulk (Driver.load: one heapify) and
gives exactly the order and deadlines indexing them one by one gives."""
import random

import pytest

from fiberapp.runtime.clock import FakeClock
from queues.store import Store
from tests.queues.conftest import DRIVERS


def _fill(store, driver, rng):
    tube = store.create_tube("q", driver)
    for i in range(300):
        opts = {"pri": rng.randrange(5)} if "ttl" in driver else {}
        if "utube" in driver:
            opts["utube"] = str(rng.randrange(7))
        if "ttl" in driver and rng.random() < 0.5:
            opts["ttl"] = rng.randrange(1, 50)
        if "ttl" in driver and rng.random() < 0.1:
            opts["delay"] = rng.randrange(1, 20)
        tube.put(i, **opts)
    return tube


def _drain(store, clock):
    """Take and ack two tasks per second of the clock: (clock, task id) pairs."""
    tube, order = store.tube("q"), []
    for _ in range(400):
        for _ in range(2):  # a slow consumer: tasks wait, so ttls lapse and delays end
            task = tube.take(timeout=0)
            if task is None:
                break
            order.append((clock.monotonic(), task.id))
            tube.ack(task.id)
        clock.advance(1)
        store.tick()  # delays end, ttls lapse
    return order


@pytest.mark.parametrize("driver", DRIVERS)
def test_restored_store_serves_tasks_in_the_same_order(driver):
    rng = random.Random(driver)
    clock_a, clock_b, clock_c = FakeClock(), FakeClock(), FakeClock()
    original = Store(clock=clock_a)
    _fill(original, driver, rng)
    restored = Store(clock=clock_b)
    restored.restore(original.dump_tables())
    restored_from_dicts = Store(clock=clock_c)  # one task at a time
    restored_from_dicts.restore(original.dump())
    assert restored.tube("q").driver.load  # the bulk path is the one under test
    expected = _drain(original, clock_a)
    assert _drain(restored, clock_b) == expected
    assert _drain(restored_from_dicts, clock_c) == expected
