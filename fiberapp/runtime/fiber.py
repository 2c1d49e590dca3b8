"""Named fibers, their registry, and the Runtime that owns them.

A Fiber is a gevent Greenlet with an id, a name, a creation time, fiber-local storage and
CPU counters. The Runtime is the one registry of live fibers (read by `fiberapp top`, the
console and the HTTP API); a fiber leaves it when it dies, and the runtime keeps counters
of how many were spawned and died.

Contracts:
- spawn() schedules the fiber; it first runs when the spawner yields (Tarantool's
  fiber.new). Every fiber has a name (the function's name unless one is given).
- status is "running" for the fiber that is executing, "suspended" for one that is ready
  or waiting, "dead" once it has finished, failed or been cancelled.
- cancel() is asynchronous: errors.Cancelled (a BaseException) is raised in the fiber at
  its next yield. join() then raises FiberCancelled in the joiner.
- join(timeout) returns the fiber's result or re-raises its exception; FiberTimeout when
  the timeout (measured by the runtime's clock) passes first.
"""
import itertools
import sys
import traceback

import gevent
from gevent.hub import Waiter, get_hub
from greenlet import GreenletExit, getcurrent

from .clock import SystemClock
from .errors import Cancelled, FiberCancelled, FiberError, FiberTimeout

MAX_NAME = 255


def current_fiber():
    """The running Fiber, or None outside fibers (main greenlet, hub, plain greenlets).

    Called for every log record, so it is one C call and one isinstance check.
    """
    g = getcurrent()
    return g if isinstance(g, Fiber) else None


def _check_name(name):
    if not isinstance(name, str):
        raise FiberError(f"a fiber name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME:
        raise FiberError(f"a fiber name must be 1..{MAX_NAME} characters, got {len(name)}")
    return name


class Fiber(gevent.Greenlet):
    """A named greenlet owned by a Runtime. Create with Runtime.spawn()."""

    def __init__(self, runtime, fn, args, kwargs, name):
        super().__init__()
        self._fn = fn
        self._fargs = args
        self._fkwargs = kwargs
        self.runtime = runtime
        self.id = next(runtime._ids)
        self.name = name
        self.created_at = runtime.clock.time()
        self.cancelled = False
        self._storage = None
        # CPU accounting: [cpu_time, switches], updated by accounting's switch hook on
        # every switch (a list: cheaper to update there than two attributes).
        self._cpu_acct = [0.0, 0]
        self.cpu_mark = 0.0  # cpu_time when the current top window began
        self.cpu_instant = 0.0
        self.cpu_average = 0.0

    @property
    def cpu_time(self):
        """Seconds this fiber held the loop (while CPU accounting ran)."""
        return self._cpu_acct[0]

    @property
    def switches(self):
        """Times this fiber was switched to (while CPU accounting ran)."""
        return self._cpu_acct[1]

    def _run(self):
        try:
            return self._fn(*self._fargs, **self._fkwargs)
        finally:
            self._fn = self._fargs = self._fkwargs = None
            self.runtime._forget(self)

    def __repr__(self):
        return f"<Fiber {self.id} {self.name!r} {self.status}>"

    @property
    def status(self):
        if self.ready():
            return "dead"
        if getcurrent() is self:
            return "running"
        return "suspended"

    @property
    def storage(self):
        """Fiber-local dict, created on first use, dropped with the fiber."""
        if self._storage is None:
            self._storage = {}
        return self._storage

    def backtrace(self, limit=None):
        """The fiber's stack as text (Tarantool's fiber.info{backtrace=true}); "" when dead.

        For a suspended fiber it is where it waits; for the running one, the caller's stack.
        """
        if self.ready():
            return ""
        frame = sys._getframe(1) if getcurrent() is self else self.gr_frame
        if frame is None:  # scheduled but not started yet
            return ""
        return "".join(traceback.format_stack(frame, limit))

    def cancel(self):
        """Ask the fiber to stop: Cancelled is raised in it at its next yield. Never blocks."""
        if self.ready():
            return
        self.cancelled = True
        self.kill(Cancelled, block=False)
        if self.ready():  # killed before it ever ran: its _run will never clean up
            self.runtime._forget(self)

    def join(self, timeout=None):
        """Wait for the fiber to end; return its result or raise its error.

        Raises FiberTimeout if `timeout` seconds (runtime clock) pass first, FiberCancelled
        if the fiber was cancelled, FiberError if a fiber tries to join itself.
        """
        if not self.ready():
            if getcurrent() is self:
                raise FiberError(f"fiber {self.id} ({self.name}) cannot join itself")
            if timeout is not None and timeout <= 0:
                raise FiberTimeout(f"fiber {self.id} ({self.name}) is still running")
            wait_ready(self, self.runtime.clock, timeout)
            if not self.ready():
                raise FiberTimeout(f"fiber {self.id} ({self.name}) did not finish within {timeout} s")
        if self.successful():
            value = self.value
            if isinstance(value, GreenletExit):
                raise FiberCancelled(f"fiber {self.id} ({self.name}) was cancelled")
            return value
        raise self.exception


def testcancel():
    """Raise Cancelled if the current fiber was cancelled (even if it caught it once).

    Every blocking runtime call (sleep, join, Channel, Cond) checks this first, as
    Tarantool's yielding calls do, so a fiber that swallowed Cancelled cannot block again.
    """
    g = getcurrent()
    if isinstance(g, Fiber) and g.cancelled:
        raise Cancelled()


def wait_ready(glet, clock, timeout):
    """Block until glet.ready() or timeout (clock seconds) passes; returns nothing.

    Works for anything with ready()/rawlink()/unlink(): greenlets, gevent Events.
    """
    testcancel()
    hub = get_hub()
    waiter = Waiter(hub)
    fired = []

    def wake(_=None):
        if not fired:  # one switch only: the link and the timer may both fire
            fired.append(True)
            hub.loop.run_callback(waiter.switch, None)

    glet.rawlink(wake)
    timer = clock.call_later(timeout, wake) if timeout is not None else None
    try:
        waiter.get()
    finally:
        glet.unlink(wake)
        if timer is not None:
            timer.cancel()


class Runtime:
    """Owns the fibers of one process: registry, counters, CPU accounting, watchdog.

    clock            SystemClock by default; tests pass a FakeClock.
    watchdog_limit   seconds a fiber may hold the loop before the watchdog reports it
                     (0 or None disables the watchdog).
    cpu_accounting   per-fiber CPU time and switch counts (a greenlet trace hook): True
                     (always), False (never) or "on-demand" (from the first top() until
                     nobody has called top() for top_linger seconds).
    top_window       seconds per window for the "instant" share in top().
    """

    def __init__(self, clock=None, watchdog_limit=0.1, cpu_accounting=True, top_window=1.0, top_linger=60.0):
        if cpu_accounting not in (True, False, "on-demand"):
            raise FiberError(f'cpu_accounting must be True, False or "on-demand", not {cpu_accounting!r}')
        self.clock = clock if clock is not None else SystemClock()
        self.watchdog_limit = watchdog_limit
        self.cpu_accounting = cpu_accounting
        self.top_window = top_window
        self.top_linger = top_linger
        self._ids = itertools.count(1)
        self._fibers = {}
        self.spawned = 0
        self.died = 0
        self.supervisor_restarts = 0
        self._supervisors = {}
        self._tracer = None
        self.watchdog = None
        self._started = False

    # -- fibers ----------------------------------------------------------------------------
    def spawn(self, fn, *args, name=None, **kwargs):
        """Create a fiber running fn(*args, **kwargs) and schedule it; returns the Fiber."""
        if not callable(fn):
            raise FiberError(f"spawn() needs a callable, not {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        fiber = Fiber(self, fn, args, kwargs, _check_name(name))
        self._fibers[fiber.id] = fiber
        self.spawned += 1
        fiber.start()
        return fiber

    def supervise(self, fn, *args, name=None, restart="on-error", backoff=(0.1, 30.0), **kwargs):
        """Run fn in a fiber that is restarted with backoff when it fails (see supervisor.py)."""
        from .supervisor import Supervisor

        if not callable(fn):
            raise FiberError(f"supervise() needs a callable, not {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        sup = Supervisor(self, fn, args, kwargs, _check_name(name), restart=restart, backoff=backoff)
        if not sup._done.is_set():
            self._supervisors[id(sup)] = sup
        return sup

    def supervisors(self):
        """Supervisors still supervising."""
        return list(self._supervisors.values())

    def _forget(self, fiber):
        if self._fibers.pop(fiber.id, None) is not None:
            self.died += 1

    def _purge(self):
        """Drop fibers killed before they ever ran by plain gevent calls (gevent.kill,
        killall) that bypass Fiber.cancel: their _run never ran to unregister them."""
        dead = [f for f in self._fibers.values() if f.ready()]
        for fiber in dead:
            self._forget(fiber)

    def fibers(self):
        """Live fibers, oldest first."""
        self._purge()
        return list(self._fibers.values())

    def find(self, fiber_id):
        """The live fiber with this id, or None."""
        fiber = self._fibers.get(fiber_id)
        if fiber is not None and fiber.ready():
            self._forget(fiber)
            return None
        return fiber

    def cancel(self, fiber_id):
        """Cancel the live fiber with this id (Tarantool's fiber.kill); False if none."""
        fiber = self._fibers.get(fiber_id)
        if fiber is None:
            return False
        fiber.cancel()
        return True

    def sleep(self, seconds):
        """Suspend the calling fiber for `seconds` of clock time; checks cancellation."""
        testcancel()
        self.clock.sleep(seconds)
        testcancel()

    def yield_(self):
        """Let every other ready fiber run once; checks cancellation."""
        self.sleep(0)

    testcancel = staticmethod(testcancel)

    def stats(self):
        """Counters for metrics and the API (a fresh dict of plain numbers)."""
        self._purge()
        watchdog = self.watchdog
        return {
            "fibers": len(self._fibers),
            "spawned": self.spawned,
            "died": self.died,
            "supervisors": len(self._supervisors),
            "supervisor_restarts": self.supervisor_restarts,
            "watchdog_reports": watchdog.reports if watchdog is not None else 0,
            "watchdog_limit": self.watchdog_limit or 0.0,
            "cpu_accounting": bool(self._tracer is not None and self._tracer.accounting),
        }

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        """Install the switch hook (CPU accounting) and start the watchdog. Idempotent.

        Call from the loop's thread; the hook is per thread.
        """
        if self._started:
            return
        from .accounting import SwitchTracer
        from .watchdog import Watchdog

        if self.cpu_accounting or self.watchdog_limit:
            hub = get_hub()
            self._tracer = SwitchTracer(self, accounting=self.cpu_accounting, window=self.top_window,
                                        linger=self.top_linger)
            self._tracer.install(hub)
            if self.watchdog_limit:
                self.watchdog = Watchdog(self._tracer, self.watchdog_limit, hub)
                self.watchdog.start()
        self._started = True

    def top(self):
        """CPU rows for `fiberapp top` and the API, busiest first (see accounting.SwitchTracer.top).

        Without accounting every row reads zero (the fibers are still listed). With
        on-demand accounting a call switches it on (until nobody has called for
        top_linger seconds); every call until one top_window has passed since then waits
        for the rest of it, so its rows show a measured window, not zeros.
        """
        self._purge()
        tracer = self._tracer
        wait = tracer.demand() if tracer is not None else 0.0
        if wait > 0:
            gevent.sleep(wait)  # real time: accounting measures real time
            self._purge()
        if tracer is not None and tracer.accounting:
            return tracer.top()
        rows = [{"id": f.id, "name": f.name, "status": f.status, "cpu_time": 0.0,
                 "switches": 0, "instant": 0.0, "average": 0.0} for f in self._fibers.values()]
        return rows

    def stop(self, timeout=5.0):
        """Cancel every fiber and wait up to `timeout` (clock seconds) for all to die.

        Supervisors are cancelled first, so nothing restarts meanwhile; fibers spawned
        while stopping (say, from a finally clause) are cancelled too. The calling fiber is
        spared. Then the watchdog and the switch hook are removed. Returns the fibers still
        alive at the deadline (empty when everything stopped).
        """
        me = getcurrent()
        for sup in list(self._supervisors.values()):
            if sup.fiber is me:
                sup._finish("cancelled")  # stop supervising, but do not cancel ourselves
            else:
                sup.cancel()
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while True:
            victims = [f for f in self._fibers.values() if f is not me and not f.ready()]
            fresh = [f for f in victims if not f.cancelled]
            for fiber in fresh:
                fiber.cancel()
            waiting = [f for f in victims if not f.ready()]
            if not waiting:
                break
            left = None if deadline is None else deadline - self.clock.monotonic()
            if left is not None and left <= 0:
                break
            wait_ready(waiting[0], self.clock, left)
            if not fresh and not waiting[0].ready():
                break  # timed out on a fiber that ignores cancellation
        if self.watchdog is not None:
            self.watchdog.stop()
        if self._tracer is not None:
            self._tracer.uninstall()
        self._started = False
        return [f for f in self._fibers.values() if f is not me and not f.ready()]
