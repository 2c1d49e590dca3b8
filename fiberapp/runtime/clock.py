"""The one place time is read.

Every deadline in fiberapp is a monotonic reading of a Clock; wall-clock time is read
only for timestamps that are shown or persisted. Tests use FakeClock, which only moves
when told to (advance / set), so time-dependent behaviour is tested without sleeping.

Interface (both clocks):
    monotonic() -> float        seconds, for deadlines and durations
    time() -> float             wall-clock seconds since the epoch, for timestamps
    call_at(deadline, fn)       run fn() once monotonic() >= deadline; returns a Timer
    call_later(delay, fn)       the same, relative
    sleep(seconds)              suspend the calling fiber
Timer callbacks run in the hub (SystemClock) or in the fiber that advances the
FakeClock; they must not block: wake someone and return.
"""
import heapq
import itertools
import time as _time

import gevent


class Timer:
    """A handle on a call_at: cancel() before it fires and it never fires."""

    __slots__ = ("deadline", "_fn", "_watcher", "cancelled")

    def __init__(self, deadline, fn, watcher=None):
        self.deadline = deadline
        self._fn = fn
        self._watcher = watcher
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _fire(self):
        if not self.cancelled:
            self.cancelled = True  # one shot
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            self._fn()


class SystemClock:
    """Real time: monotonic() is time.monotonic, timers are gevent loop timers."""

    # The C functions themselves: a clock read on the hot path is one C call, not a
    # Python frame around one.
    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    def call_at(self, deadline, fn):
        return self.call_later(deadline - _time.monotonic(), fn)

    def call_later(self, delay, fn):
        loop = gevent.get_hub().loop
        watcher = loop.timer(max(0.0, delay))
        timer = Timer(_time.monotonic() + max(0.0, delay), fn, watcher)
        watcher.start(timer._fire)
        return timer

    def sleep(self, seconds):
        gevent.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time for tests.

    Time stands still until advance(dt) or set(t) is called. Advancing fires due timers
    in deadline order, setting monotonic() to each deadline as it fires, and lets the
    fibers they woke run (gevent.idle) before going on, so a chain of timeouts unfolds
    as it would in real time: 450 virtual seconds take a few milliseconds.
    """

    def __init__(self, start=1000.0, wall=1_700_000_000.0):
        self._now = float(start)
        self._wall_offset = float(wall) - float(start)
        self._timers = []
        self._seq = itertools.count()

    def monotonic(self):
        return self._now

    def time(self):
        return self._now + self._wall_offset

    def call_at(self, deadline, fn):
        timer = Timer(float(deadline), fn)
        heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
        return timer

    def call_later(self, delay, fn):
        return self.call_at(self._now + max(0.0, delay), fn)

    def sleep(self, seconds):
        if seconds <= 0:
            gevent.sleep(0)
            return
        event = gevent.event.Event()
        timer = self.call_later(seconds, event.set)
        try:
            event.wait()
        finally:
            timer.cancel()

    def next_deadline(self):
        """The earliest pending timer's deadline, or None."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def pending(self):
        self._drop_cancelled()
        return len(self._timers)

    def advance(self, seconds):
        """Move time forward by seconds, firing every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self.set(self._now + seconds)

    def set(self, target):
        target = float(target)
        if target < self._now:
            raise ValueError("a clock never goes backwards")
        _settle()
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > target:
                break
            deadline, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            timer._fire()
            _settle()
        self._now = target
        _settle()

    def jump_wall(self, seconds):
        """Move only the wall clock (as an NTP step or downtime would), not monotonic time."""
        self._wall_offset += seconds

    def _drop_cancelled(self):
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)


def _settle():
    """Let every fiber that is ready to run, run, until none is."""
    gevent.idle()
    gevent.sleep(0)
    gevent.idle()


import gevent.event  # noqa: E402  (after the module body: keeps the import cycle-free)
