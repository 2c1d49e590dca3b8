"""The watchdog: report a fiber that holds the loop longer than a limit.

A native thread (not a greenlet: a hog holds the loop, so no greenlet could run) wakes
every limit/4 seconds and looks at what the SwitchTracer recorded on the last greenlet
switch: who got the loop (`running`) and when (`since`). If that greenlet is not the hub
(the hub holding the loop means it is idle, waiting for I/O) and has held it for more than
`limit` seconds, the watchdog counts one report for that stretch (never two for the same
switch), captures the hog's stack (sys._current_frames() of the loop thread: the running
greenlet's frames) and queues a log record.

The record is logged from the loop thread (logger "fiberapp.watchdog", WARNING), through a
gevent async watcher, so it appears once the hog yields: logging handlers and their
gevent-patched locks are only touched from the loop. The counter and `last_report` are
updated at once, from the watchdog thread (plain attribute writes under the GIL).
"""
import collections
import logging
import sys
import traceback
from time import perf_counter

from gevent import monkey

log = logging.getLogger("fiberapp.watchdog")

_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")
_get_ident = monkey.get_original("_thread", "get_ident")
_real_sleep = monkey.get_original("time", "sleep")


def greenlet_name(g):
    """A display name for any greenlet: a Fiber's name, "hub", "main" or the greenlet repr."""
    name = getattr(g, "name", None)
    if isinstance(name, str):
        return name
    if g is not None and g.parent is None:
        return "main"
    return repr(g)


class Watchdog:
    def __init__(self, tracer, limit, hub):
        if not limit or limit <= 0:
            raise ValueError("watchdog limit must be > 0 seconds")
        self.tracer = tracer
        self.limit = float(limit)
        self.interval = min(max(self.limit / 4, 0.002), 0.25)
        self.reports = 0
        self.last_report = None
        self._reported_since = None
        self._pending = collections.deque()
        self._hub = hub
        self._loop_ident = _get_ident()
        self._stopping = False
        self._done = None
        self._async = hub.loop.async_()
        self._async.ref = False  # must not keep the loop alive on its own
        self._async.start(self._flush)

    def start(self):
        if self._async is None:
            raise RuntimeError("a stopped watchdog cannot be restarted; make a new one")
        if self._done is not None:
            return
        self._done = _allocate_lock()
        self._done.acquire()
        self._stopping = False
        _start_thread(self._main, ())

    def stop(self):
        """Stop the thread (waits at most one interval) and flush pending records."""
        if self._done is not None:
            self._stopping = True
            if self._done.acquire(True, self.interval * 4 + 1.0):
                self._done.release()
            self._done = None
        self._flush()
        if self._async is not None:
            self._async.stop()
            self._async.close()
            self._async = None

    # -- watchdog thread -------------------------------------------------------------------
    def _main(self):
        try:
            while not self._stopping:
                _real_sleep(self.interval)
                self.check()
        finally:
            self._done.release()

    def check(self, now=None):
        """One look at the loop; returns the report made, or None. Runs in the thread."""
        tr = self.tracer
        since = tr.since  # time of the last switch: identifies the current stretch
        running = tr.running
        if running is None or running is tr.hub or since == self._reported_since:
            return None
        held = (perf_counter() if now is None else now) - since
        if held < self.limit or tr.since != since:  # within the limit, or it just switched
            return None
        frame = sys._current_frames().get(self._loop_ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        report = {
            "fiber_id": getattr(running, "id", None),
            "name": greenlet_name(running),
            "held": held,
            "limit": self.limit,
            "stack": stack,
        }
        self._reported_since = since
        self.last_report = report
        self.reports += 1
        self._pending.append(report)
        watcher = self._async
        if watcher is not None:
            watcher.send()
        return report

    # -- loop thread -----------------------------------------------------------------------
    def _flush(self):
        while self._pending:
            r = self._pending.popleft()
            log.warning(
                "fiber %r (id %s) has held the loop for %.3f s without yielding (limit %.3f s); "
                "stack:\n%s", r["name"], r["fiber_id"], r["held"], r["limit"], r["stack"].rstrip(),
                extra={"hog_name": r["name"], "hog_id": r["fiber_id"], "hog_held": r["held"]},
            )
