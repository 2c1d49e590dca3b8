"""fsync mode: how a batch's outcome reaches its waiters when something goes wrong.

Every way the journal wakes a batch's fibers (completed, failed, past commit_timeout,
closed) goes through one loop: a waiter that dies raising does not strand the others;
something thrown into the hub itself does stop that loop; and each waiter raises its own
exception object.
"""
import errno
import subprocess
import sys
import textwrap

import gevent
import greenlet
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist.errors import WalError, WalIOError
from queues.persist.journal import Journal

from .faults import FaultyDisk
from .test_close_race import GUARD, Gate, GatedDisk


def _raw_waiter_that_dies_raising(j):
    """A plain greenlet whose parent is the hub: when it dies raising, the error goes to
    the greenlet that switched into it last - the hub, inside the wake loop."""
    def raw():
        try:
            j.wait(j.log({"raw": 1}))
        except WalError:
            pass
        raise ValueError("a raw waiter dies raising (expected in this test)")

    hub = gevent.get_hub()
    g = greenlet.greenlet(raw, parent=hub)
    hub.loop.run_callback(g.switch)
    return hub


def _reported(hub, monkeypatch):
    """What the hub reports as failed callbacks (the dying waiter's error), as a list."""
    reported = []
    monkeypatch.setattr(hub, "handle_error", lambda *args: reported.append(args[1]))
    return reported


def _gated_journal(tmp_path):
    """An fsync journal whose first fdatasync stops at a gate; commit_timeout 0, so the
    held batch expires at once."""
    disk = GatedDisk()
    gate = Gate()
    disk.gates = [gate]
    return Journal(str(tmp_path), "fsync", FakeClock(), disk=disk, commit_timeout=0), gate


def _outcome(j, n):
    try:
        j.wait(j.log({"k": n}))
        return "ok"
    except WalError as exc:
        return type(exc).__name__


def test_a_timed_out_batch_reaches_every_waiter_even_if_one_dies_raising(tmp_path, monkeypatch):
    j, gate = _gated_journal(tmp_path)
    reported = _reported(_raw_waiter_that_dies_raising(j), monkeypatch)
    fibers = [gevent.spawn(_outcome, j, n) for n in range(3)]
    gate.wait_entered()
    try:
        done = gevent.joinall(fibers, timeout=GUARD)
        assert [f.value for f in done] == ["WalError"] * 3  # none left parked
        assert reported == [ValueError]
    finally:
        gate.go.set()


def test_closing_with_waiters_reaches_every_one_even_if_one_dies_raising(tmp_path, monkeypatch):
    j, gate = _gated_journal(tmp_path)
    first = gevent.spawn(_outcome, j, "first")
    gate.wait_entered()  # a batch hangs in the thread: later records stay pending
    assert first.get(timeout=GUARD) == "WalError"
    reported = _reported(_raw_waiter_that_dies_raising(j), monkeypatch)
    fibers = [gevent.spawn(_outcome, j, n) for n in range(3)]
    gevent.idle()
    try:
        with pytest.raises(WalError, match="still being written"):
            j.close()
        done = gevent.joinall(fibers, timeout=GUARD)
        assert [f.value for f in done] == ["WalClosed"] * 3
        assert reported == [ValueError]
    finally:
        gate.go.set()


def test_every_waiter_of_a_failed_batch_raises_its_own_exception(tmp_path):
    disk = FaultyDisk()
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk)
    j.wait(j.log({"first": 1}))
    disk.fail("fdatasync", errno.EIO, times=1)
    caught = []

    def worker(n):
        try:
            j.wait(j.log({"k": n}))
        except WalIOError as exc:
            caught.append(exc)

    gevent.joinall([gevent.spawn(worker, n) for n in range(4)], timeout=GUARD, raise_error=True)
    assert len(caught) == 4
    assert len({id(exc) for exc in caught}) == 4  # not one object raised four times
    assert len({str(exc) for exc in caught}) == 1
    for exc in caught:  # each holds only its own fiber's traceback
        frames = 0
        tb = exc.__traceback__
        while tb is not None:
            frames += 1
            tb = tb.tb_next
        assert frames <= 2, frames


def test_the_hub_destroyed_by_a_woken_fiber_wakes_nobody_else(tmp_path):
    """HubDestroyed is thrown into the hub where it is suspended: in the wake loop. The
    loop must end there, not go on switching fibers inside hub.destroy(). A process of its
    own: the test destroys its hub."""
    script = textwrap.dedent(f"""
        from fiberapp.runtime.patch import patch_all
        patch_all()
        import gevent
        from fiberapp.runtime.clock import FakeClock
        from queues.persist.journal import Journal

        j = Journal({str(tmp_path)!r}, "fsync", FakeClock())
        ran_after = []
        destroying = [False]

        def worker(n):
            j.wait(j.log({{"k": n}}))
            if destroying[0]:
                ran_after.append(n)

        token = j.log({{"main": 1}})
        fibers = [gevent.spawn(worker, n) for n in range(5)]
        j.wait(token)  # the main greenlet parks first, so it is woken first
        destroying[0] = True
        try:
            gevent.get_hub().destroy(destroy_loop=True)
        except BaseException:
            pass
        print("ran inside destroy:", ran_after)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=GUARD)
    assert "ran inside destroy: []" in out.stdout, (out.stdout, out.stderr)


def test_a_child_greenlet_ending_does_not_wake_its_parent_before_the_record_is_durable(tmp_path):
    """greenlet switches a finished greenlet's return value into its parent: a fiber parked
    in wait() must not take that for its batch's completion."""
    disk = GatedDisk()
    j = Journal(str(tmp_path), "fsync", FakeClock(), disk=disk)
    gate = Gate()
    disk.gates = [gate]
    returned = []

    def fiber():
        token = j.log({"k": "parent"})
        child = greenlet.greenlet(lambda: None)  # its parent: this fiber
        gevent.get_hub().loop.run_callback(child.switch)  # ends while we wait below
        j.wait(token)
        returned.append(j._committed_lsn >= token)

    f = gevent.spawn(fiber)
    gate.wait_entered()  # the batch is in the thread, held
    gevent.idle()  # the child has run and ended by now
    try:
        assert not returned and not f.dead  # still waiting for the disk
    finally:
        gate.go.set()
    f.get(timeout=GUARD)
    assert returned == [True]
