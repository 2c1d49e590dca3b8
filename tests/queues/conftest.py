"""Fixtures for the queue store tests: a FakeClock store, a journal that records every op
(msgpack round-tripped, as the WAL would store it), and a no-switch assertion."""
import contextlib

import greenlet
import msgpack
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.store import Store

DRIVERS = ("fifo", "fifottl", "limfifottl", "utube", "utubettl")
TTL_DRIVERS = ("fifottl", "limfifottl", "utubettl")


class RecordingJournal:
    """Keeps each op as the WAL would: msgpack-encoded at log() time."""

    def __init__(self):
        self.records = []
        self.waited = []
        self.fail_next = None

    def log(self, op):
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.records.append(msgpack.packb(op, use_bin_type=True))
        return len(self.records)

    def wait(self, token):
        self.waited.append(token)

    def ops(self):
        return [msgpack.unpackb(r, raw=False) for r in self.records]


class EncodedRecordingJournal(RecordingJournal):
    """A RecordingJournal that also takes encoded ops (bytes), as the WAL's journal may
    (``encoded_ops``, see Store.attach_journal): the bytes are kept as they come."""

    encoded_ops = True

    def __init__(self):
        super().__init__()
        self.encoded = 0  # how many ops came encoded

    def log(self, op):
        if type(op) is bytes:
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            self.encoded += 1
            self.records.append(op)
            return len(self.records)
        return super().log(op)


def replay(ops, clock):
    """A fresh store rebuilt from the op log alone."""
    store = Store(clock=clock)
    for op in ops:
        store.apply(op)
    return store


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def journal():
    return RecordingJournal()


@pytest.fixture
def store(clock, journal):
    return Store(clock=clock, journal=journal)


@contextlib.contextmanager
def no_switch():
    """Fail if the current greenlet switches away (to the hub or another fiber) inside."""
    switches = []

    def trace(event, args):
        if event in ("switch", "throw"):
            switches.append(args)

    old = greenlet.settrace(trace)
    try:
        yield switches
    finally:
        greenlet.settrace(old)
    assert not switches, f"the operation switched greenlets: {switches}"
