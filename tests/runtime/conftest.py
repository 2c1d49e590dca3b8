import pytest

from fiberapp.runtime.clock import FakeClock
from fiberapp.runtime.fiber import Runtime


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def rt(clock):
    runtime = Runtime(clock=clock, watchdog_limit=0)
    runtime.start()
    yield runtime
    left = runtime.stop(timeout=None)
    assert left == []
