"""Per-fiber CPU accounting (Tarantool's fiber.top) from one greenlet trace hook.

greenlet calls the hook on every switch with (origin, target). The hook reads
time.perf_counter() once and charges the interval since the previous switch to `origin`:
that is the time origin held the loop (in a single-threaded loop, wall time between
switches is the fiber's time, including any blocking call it made by mistake). Time spent
in the hub (callbacks, and waiting for I/O while idle) goes to a "hub" row; the main
greenlet and plain gevent greenlets get rows of their own.

Every `window` seconds the time charged in that window becomes each fiber's `cpu_instant`
(share of the loop in the last window, 0..1) and is folded into `cpu_average` (an
exponential moving average). The roll-over happens in the hook, or when top() is read.

The same hook records which greenlet is running and since when (`running`, `since`,
`seq`) for the watchdog thread; with accounting off only that part runs.

The hook is per thread (greenlet.settrace); install() chains to any previous hook (gevent's
monitor thread uses one too) and uninstall() restores it.
"""
import greenlet
from time import perf_counter

from .fiber import Fiber

EMA_ALPHA = 0.3  # weight of the newest window in cpu_average


class Bucket:
    """A top() row for greenlets that are not Fibers (hub, main, others)."""

    __slots__ = ("name", "cpu_time", "switches", "cpu_window", "cpu_instant", "cpu_average")

    def __init__(self, name):
        self.name = name
        self.cpu_time = 0.0
        self.switches = 0
        self.cpu_window = 0.0
        self.cpu_instant = 0.0
        self.cpu_average = 0.0


class SwitchTracer:
    def __init__(self, runtime, accounting=True, window=1.0):
        self.runtime = runtime
        self.accounting = accounting
        self.window = window
        self.hub = None
        self.buckets = {"hub": Bucket("hub"), "main": Bucket("main"), "other": Bucket("other")}
        self._prev = None
        self._installed = False
        self.running = None  # greenlet now on the loop (for the watchdog)
        self.since = perf_counter()  # when it got the loop
        self.seq = 0  # switch counter: the watchdog reports each (seq) at most once
        self._last = self.since
        self._win_start = self.since

    # -- install ---------------------------------------------------------------------------
    def install(self, hub):
        if self._installed:
            return
        self.hub = hub
        self.running = greenlet.getcurrent()
        self._last = self.since = self._win_start = perf_counter()
        hook = self._trace_full if self.accounting else self._trace_watch
        self._hook = hook
        self._prev = greenlet.settrace(hook)
        self._installed = True

    def uninstall(self):
        if not self._installed:
            return
        current = greenlet.gettrace()
        if current == self._hook:
            greenlet.settrace(self._prev)
        # else someone chained after us; leave their hook (it still calls ours harmlessly)
        self._installed = False
        self.running = None

    # -- hooks (hot path: keep them short) --------------------------------------------------
    def _bucket(self, g):
        if g is self.hub:
            return self.buckets["hub"]
        if g.parent is None:
            return self.buckets["main"]
        return self.buckets["other"]

    def _trace_full(self, event, args):
        if event == "switch" or event == "throw":
            origin, target = args
            now = perf_counter()
            dt = now - self._last
            self._last = now
            acct = origin if isinstance(origin, Fiber) else self._bucket(origin)
            acct.cpu_time += dt
            acct.cpu_window += dt
            acct = target if isinstance(target, Fiber) else self._bucket(target)
            acct.switches += 1
            self.running = target
            self.since = now
            self.seq += 1
            if now - self._win_start >= self.window:
                self.roll(now)
        if self._prev is not None:
            self._prev(event, args)

    def _trace_watch(self, event, args):
        if event == "switch" or event == "throw":
            self.running = args[1]
            self.since = perf_counter()
            self.seq += 1
        if self._prev is not None:
            self._prev(event, args)

    # -- windows ---------------------------------------------------------------------------
    def roll(self, now=None):
        """Close the current window: set cpu_instant and fold it into cpu_average."""
        if now is None:
            now = perf_counter()
        elapsed = now - self._win_start
        if elapsed <= 0:
            return
        if self.running is not None and self.accounting:
            # Charge the greenlet that is running now up to this instant.
            running = self.running
            acct = running if isinstance(running, Fiber) else self._bucket(running)
            dt = now - self._last
            acct.cpu_time += dt
            acct.cpu_window += dt
            self._last = now
        for acct in list(self.runtime._fibers.values()) + list(self.buckets.values()):
            share = acct.cpu_window / elapsed
            acct.cpu_instant = share
            acct.cpu_average = EMA_ALPHA * share + (1 - EMA_ALPHA) * acct.cpu_average
            acct.cpu_window = 0.0
        self._win_start = now

    def top(self):
        """Rows (dicts) for every live fiber plus hub/main/other, busiest first.

        Keys: id (None for the pseudo-rows), name, status, cpu_time (seconds since
        accounting began), switches (times switched to), instant and average (percent of
        the loop: last window / moving average).
        """
        now = perf_counter()
        if now - self._win_start >= self.window:
            self.roll(now)
        rows = []
        for f in self.runtime._fibers.values():
            rows.append(_row(f.id, f.name, f.status, f))
        for name, b in self.buckets.items():
            rows.append(_row(None, name, "system", b))
        rows.sort(key=lambda r: (r["average"], r["cpu_time"]), reverse=True)
        return rows


def _row(fid, name, status, acct):
    return {
        "id": fid,
        "name": name,
        "status": status,
        "cpu_time": acct.cpu_time,
        "switches": acct.switches,
        "instant": round(acct.cpu_instant * 100.0, 2),
        "average": round(acct.cpu_average * 100.0, 2),
    }
