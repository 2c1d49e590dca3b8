"""Waiting for a condition in tests: for states nothing can notify us about (a query showing up
in pg_stat_activity, the server noticing a hang-up). Yields to the loop between checks and
fails the test after `timeout` real seconds; it never sleeps to make something happen."""
import gevent


def wait_for(condition, timeout=5.0, what=None, interval=0.001):
    what = what or getattr(condition, "__name__", "condition")
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
        while not condition():
            gevent.sleep(interval)
