"""The WAL's native thread: jobs run off the loop, results come back in the hub."""
import gevent
import gevent.event
import pytest

from queues.persist.wal_thread import WalThread


def test_jobs_run_in_order_and_report_values_and_exceptions():
    results = gevent.event.AsyncResult()
    got = []

    def on_done(ok, value):
        assert gevent.getcurrent() is gevent.get_hub()  # called in the hub
        got.append((ok, value))
        results.set(len(got))

    thread = WalThread(gevent.get_hub(), on_done)
    try:
        thread.submit(lambda a, b: a + b, (2, 3))
        with pytest.raises(RuntimeError):
            thread.submit(len, ((),))  # one job at a time
        assert results.get(timeout=10) == 1
        results = gevent.event.AsyncResult()
        thread.submit(lambda: 1 / 0, ())
        assert results.get(timeout=10) == 2
    finally:
        thread.close()
    assert got[0] == (True, 5)
    assert got[1][0] is False and isinstance(got[1][1], ZeroDivisionError)
    assert not thread.busy


def test_a_parked_fiber_keeps_the_loop_alive_while_a_job_runs():
    """Nothing but the job is pending: the hub must wait for it, not exit (LoopExit)."""
    from gevent.monkey import get_original

    sleep = get_original("time", "sleep")
    waiter = gevent.hub.Waiter()
    thread = WalThread(gevent.get_hub(), lambda ok, value: waiter.switch(value))
    try:
        # a blocking job (as an fdatasync is): its length does not matter, nothing waits on time
        thread.submit(lambda: sleep(0.01) or "done", ())
        assert waiter.get() == "done"
    finally:
        thread.close()
