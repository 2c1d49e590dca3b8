"""fsync mode: the fibers of a completed batch wake one another (Journal._wake_one).

The hub switches into the first waiter; each woken fiber that parks again in wait()
switches straight into the next waiter instead of back to the hub. These tests hold the
guarantees around that: every waiter is woken exactly once with its batch's outcome, a
fiber that blocks on something else mid-chain does not strand the rest, and a failed
batch reaches all of its waiters.
"""
import errno

import gevent
import gevent.event
import greenlet

from fiberapp.runtime.clock import FakeClock
from queues.persist.errors import WalIOError
from queues.persist.journal import Journal

from .faults import FaultyDisk
from .test_journal import read_all


def test_a_fiber_that_blocks_elsewhere_mid_chain_does_not_strand_the_others(tmp_path):
    j = Journal(str(tmp_path), "fsync", FakeClock())
    side = gevent.event.Event()
    rounds = 6

    def worker(n):
        for i in range(rounds):
            j.wait(j.log({"op": "set", "key": f"{n}-{i}"}))
            if n == 3:
                gevent.sleep(0)  # back to the hub in the middle of a chain of wakes
            elif n == 5:
                side.wait()  # parked elsewhere until fiber 7 has gone a round
            elif n == 7:
                side.set()
        return n

    fibers = [gevent.spawn(worker, n) for n in range(20)]
    done = gevent.joinall(fibers, timeout=30, raise_error=True)
    assert sorted(f.value for f in done) == list(range(20))
    assert j.batches < 20 * rounds  # still group commit
    j.close()
    assert sorted(op["key"] for _lsn, op in read_all(str(tmp_path))) == sorted(
        f"{n}-{i}" for n in range(20) for i in range(rounds))


def test_woken_fibers_switch_into_one_another_not_back_to_the_hub(tmp_path):
    """The point of the chain: one greenlet switch per wake. With the hub waking each
    fiber in turn, every wait() switches back to the hub (>= one hub switch per record)."""
    j = Journal(str(tmp_path), "fsync", FakeClock())
    hub = gevent.get_hub()
    to_hub = [0]

    def trace(event, args):
        if event == "switch" and args[1] is hub:
            to_hub[0] += 1

    def worker(n):
        for i in range(10):
            j.wait(j.log({"op": "set", "key": n}))

    fibers = [gevent.spawn(worker, n) for n in range(50)]
    old = greenlet.settrace(trace)
    try:
        gevent.joinall(fibers, timeout=30, raise_error=True)
    finally:
        greenlet.settrace(old)
    assert j.records == 500
    assert to_hub[0] < 250, to_hub[0]  # ~1 per batch (+ start and end), not 1 per record
    j.close()


class _SecondSyncFails(FaultyDisk):
    def __init__(self):
        super().__init__()
        self.syncs = 0

    def fdatasync(self, fd):
        self.syncs += 1
        if self.syncs == 2:
            raise OSError(errno.EIO, "injected EIO on the second fdatasync")
        super().fdatasync(fd)


def test_a_failed_batch_reaches_every_waiter_and_a_good_one_none(tmp_path):
    """Batch 1 succeeds: its 30 fibers wake one another and log batch 2 from inside the
    chain; batch 2's fdatasync fails: every one of its waiters gets WalIOError, none
    returns as if durable, and none of batch 1's got an error."""
    disk = _SecondSyncFails()
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk)
    j.wait(j.log({"op": "first"}))  # the segment's first batch (and its directory fsync)
    disk.syncs = 0
    ready = gevent.event.Event()
    outcomes = {}

    def worker(n):
        ready.wait()
        j.wait(j.log({"op": "one", "n": n}))
        outcomes[n] = ["ok"]
        try:
            j.wait(j.log({"op": "two", "n": n}))
            outcomes[n].append("durable")
        except WalIOError:
            outcomes[n].append("WalIOError")

    fibers = [gevent.spawn(worker, n) for n in range(30)]
    gevent.sleep(0)
    ready.set()
    gevent.joinall(fibers, timeout=30, raise_error=True)
    assert outcomes == {n: ["ok", "WalIOError"] for n in range(30)}
    assert j.broken is not None
    j.close()


def test_a_waiter_that_dies_raising_does_not_strand_the_rest_of_its_batch(tmp_path):
    """A raw greenlet (its parent the hub) that raises after its wake-up hands the
    exception to the hub, inside the wake loop: the other waiters of the batch must
    still be woken, and the batch completion run to its end (the exception is reported
    as the hub reports a failed callback)."""
    j = Journal(str(tmp_path), "fsync", FakeClock())
    hub = gevent.get_hub()

    def raw():
        j.wait(j.log({"op": "raw"}))
        raise ValueError("raised after its wake-up (expected in this test)")

    def worker(n):
        for i in range(3):
            j.wait(j.log({"op": "set", "key": f"{n}-{i}"}))
        return n

    g = greenlet.greenlet(raw, parent=hub)
    hub.loop.run_callback(g.switch)  # started by the hub: it logs, then parks
    fibers = [gevent.spawn(worker, n) for n in range(10)]
    done = gevent.joinall(fibers, timeout=30)
    assert sorted(f.value for f in done) == list(range(10))
    assert g.dead
    j.close()
