"""runtime.heap: what the server does to the collector once start-up is over."""
import gc

import pytest

from fiberapp.runtime import heap


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_freeze_startup_freezes_and_leaves_the_thresholds(restore_gc):
    gc.set_threshold(700, 10, 10)
    kept = [object(), {"a": [1, 2]}]
    count = heap.freeze_startup()
    assert count == heap.frozen() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert kept


def test_set_young_threshold_raises_only_the_young_one(restore_gc):
    gc.set_threshold(700, 10, 10)
    heap.set_young_threshold()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    assert heap.YOUNG_THRESHOLD > 700
    heap.set_young_threshold(2500)
    assert gc.get_threshold() == (2500, 10, 10)


def test_a_young_threshold_of_zero_leaves_the_collector_alone(restore_gc):
    gc.set_threshold(700, 10, 10)
    heap.set_young_threshold(0)
    assert gc.get_threshold() == (700, 10, 10)
