"""A finished task is freed by reference counting, not left for the cyclic collector.

With a million tasks in memory a full collection holds the loop for about half a second, and
every task that ends as cyclic garbage brings the next collection closer. The ready index
entry and its task pointed at each other; the store breaks that link when a task leaves.
"""
import gc

import pytest

from fiberapp.runtime.clock import FakeClock
from queues.store import Store
from tests.queues.conftest import DRIVERS, RecordingJournal


def _cycles(tube, n):
    """Every way a task ends: ack, delete (ready, buried, taken), after release and kick."""
    for i in range(n):
        task = tube.put({"i": i})
        assert tube.take(timeout=0).id == task.id
        tube.ack(task.id)
        tube.delete(tube.put(i).id)
        task = tube.put(i)
        tube.bury(task.id)
        tube.delete(task.id)
        task = tube.put(i)
        tube.bury(task.id)
        tube.kick(1)
        assert tube.take(timeout=0).id == task.id
        tube.release(task.id)
        assert tube.take(timeout=0).id == task.id
        tube.delete(task.id)
    for i in range(10):
        tube.put(i)
    tube.take(timeout=0)
    tube.truncate()


@pytest.mark.parametrize("journaled", [False, True], ids=["no-journal", "journal"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_finished_tasks_leave_no_cyclic_garbage(driver, journaled):
    store = Store(clock=FakeClock(), journal=RecordingJournal() if journaled else None)
    tube = store.create_tube("q", driver)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage, to look at
    try:
        _cycles(tube, 300)
        gc.collect()
        # Only the store's own objects count: a native thread left by another test (a WAL
        # thread, a watchdog) may make cyclic garbage of its own while this runs.
        ours = [o for o in gc.garbage if type(o).__module__.startswith("queues")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not ours, f"{len(ours)} store objects were only reachable through cycles: {ours[:5]}"
