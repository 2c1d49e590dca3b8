"""Journal.close() while other fibers log: it refuses new records first, then drains.

Nothing here waits on time: a disk whose fdatasync calls stop at gates (real-thread Events,
since they run in the WAL thread or the hub's threadpool) holds a batch or close()'s own
fdatasync where the test wants it, and the test waits for "it got there" cooperatively
(a threadpool thread waits on the Event, the loop runs on).
"""
import errno

import gevent
import pytest
from gevent import monkey

from fiberapp.runtime.clock import FakeClock
from queues.persist.disk import Disk
from queues.persist.errors import WalClosed, WalError
from queues.persist.journal import Journal
from queues.persist.segment import SegmentReader
from queues.persist.wal_thread import WalThread

_Event = monkey.get_original("threading", "Event")
GUARD = 30  # seconds: only so that a regression fails instead of hanging


class Gate:
    def __init__(self):
        self.entered = _Event()
        self.go = _Event()

    def wait_entered(self):
        """Cooperative: the loop keeps running while a pool thread waits."""
        assert gevent.get_hub().threadpool.apply(self.entered.wait, (GUARD,))


class GatedDisk(Disk):
    """fdatasync calls stop at the gates queued in .gates (in order), once armed; every
    OSError of a call is kept (EBADF: a call on a file closed under it)."""

    def __init__(self):
        self.gates = []
        self.errors = []

    def _errors(self, fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            self.errors.append(exc)
            raise

    def fdatasync(self, fd):
        if self.gates:
            gate = self.gates.pop(0)
            gate.entered.set()
            gate.go.wait(GUARD)
        return self._errors(super().fdatasync, fd)

    def pwrite(self, fd, data, offset):
        return self._errors(super().pwrite, fd, data, offset)


def ops_on_disk(tmp_path):
    out = []
    for path in sorted((tmp_path).glob("*.wal")):
        out += [op for _o, _l, _w, op in SegmentReader(str(path), path.read_bytes(), newest=True)]
    return out


def journal(tmp_path, mode="fsync", **kw):
    disk = GatedDisk()
    return Journal(str(tmp_path), mode, FakeClock(), disk=disk, **kw), disk


@pytest.mark.parametrize("mode", ["write", "fsync"])
def test_a_record_logged_while_close_syncs_is_refused(tmp_path, mode):
    """The review's race: close() yields in its fdatasync and another fiber logs. The record
    used to be accepted and then written to a closed file (or its waiter hung until the
    commit timeout); now it is refused with WalClosed - not applied, nothing lost."""
    j, disk = journal(tmp_path, mode)
    token = j.log({"op": "a"})
    j.wait(token)
    gate = Gate()
    disk.gates = [gate]
    closer = gevent.spawn(j.close)
    gate.wait_entered()  # close() is in its fdatasync
    with pytest.raises(WalClosed):
        j.log({"op": "b"})
    gate.go.set()
    closer.get(timeout=GUARD)
    assert ops_on_disk(tmp_path) == [{"op": "a"}]
    assert not disk.errors
    with pytest.raises(WalClosed):
        j.log({"op": "c"})


def test_close_waits_for_the_batch_in_flight(tmp_path):
    j, disk = journal(tmp_path)
    j.wait(j.log({"op": "a"}))
    gate = Gate()
    disk.gates = [gate]
    token = j.log({"op": "b"})
    waiter = gevent.spawn(j.wait, token)
    gate.wait_entered()  # b's batch is in the WAL thread, held in its fdatasync
    assert j._inflight is not None
    closer = gevent.spawn(j.close)
    gevent.idle()  # close() runs as far as it can: it must now be waiting for the batch
    assert not closer.ready() and j._seg is not None and j._seg.fd is not None
    gate.go.set()
    closer.get(timeout=GUARD)
    assert waiter.get(timeout=GUARD) is None  # woken by its batch, not by a timeout
    assert ops_on_disk(tmp_path) == [{"op": "a"}, {"op": "b"}]
    assert not disk.errors  # no call on a closed file


def test_close_writes_records_pending_and_scheduled(tmp_path):
    """Records logged just before close(), their batch not yet handed to the thread."""
    j, _disk = journal(tmp_path)
    j.wait(j.log({"op": "a"}))
    waiters = []
    for op in ("b", "c", "d"):
        waiters.append(gevent.spawn(j.wait, j.log({"op": op})))
    j.close()  # the waiters have not even run yet
    assert [w.get(timeout=GUARD) for w in waiters] == [None, None, None]
    assert ops_on_disk(tmp_path) == [{"op": op} for op in "abcd"]


def test_close_gives_up_on_a_batch_past_the_commit_timeout(tmp_path):
    """A hung disk: close() raises instead of waiting for ever, does not close the files
    under the thread, and they are closed once the batch completes."""
    j, disk = journal(tmp_path, commit_timeout=0)  # the batch expires at once
    gate = Gate()
    disk.gates = [gate]
    first = gevent.spawn(j.wait, j.log({"op": "a"}))
    gate.wait_entered()
    with pytest.raises(WalError):
        first.get(timeout=GUARD)  # the commit timeout
    token_b = j.log({"op": "b"})
    later = gevent.spawn(j.wait, token_b)  # pending behind the stuck batch
    gevent.idle()
    with pytest.raises(WalError, match="still being written"):
        j.close()
    with pytest.raises(WalClosed):
        later.get(timeout=GUARD)  # never written
    seg = j._seg
    assert seg is not None and seg.fd is not None  # left open while the thread uses it
    late = gevent.spawn(j.wait, token_b)  # (a caller that should not be, but may not hang)
    gevent.idle()
    gate.go.set()
    with gevent.Timeout(GUARD):  # the batch completes; its result comes back to the loop
        while j._seg is not None:
            gevent.sleep(0)
    assert seg.fd is None and not disk.errors
    with pytest.raises(WalClosed):
        late.get(timeout=GUARD)
    with pytest.raises(WalClosed):
        j.wait(token_b)
    assert ops_on_disk(tmp_path) == [{"op": "a"}]


def test_close_after_a_failed_batch_closes_the_files(tmp_path):
    class FailingDisk(GatedDisk):
        def fdatasync(self, fd):
            raise OSError(errno.EIO, "injected EIO")

    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=FailingDisk())
    with pytest.raises(WalError):
        j.wait(j.log({"op": "a"}))
    j.close()
    assert j._seg is None


def test_wal_thread_close_right_after_submit_runs_the_job_and_reports_it():
    """close() in the instant between submit() releasing the job lock and the thread taking
    it used to release an unlocked lock (RuntimeError). Many rounds: each is checked."""
    for _ in range(200):
        done = []
        waiter = gevent.hub.Waiter()
        thread = WalThread(gevent.get_hub(), lambda ok, value: (done.append((ok, value)), waiter.switch(None)))
        thread.submit(lambda: 1, ())
        thread.close()
        waiter.get()
        assert done == [(True, 1)] and not thread.busy
        thread.close()  # a second close is a no-op


def test_wal_thread_close_while_idle_and_before_any_job():
    thread = WalThread(gevent.get_hub(), lambda ok, value: None)
    thread.close()
    results = []
    waiter = gevent.hub.Waiter()
    thread = WalThread(gevent.get_hub(), lambda ok, value: (results.append(value), waiter.switch(None)))
    thread.submit(lambda: "x", ())
    waiter.get()
    thread.close()
    assert results == ["x"]
