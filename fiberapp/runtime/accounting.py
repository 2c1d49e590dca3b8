"""Per-fiber CPU accounting (Tarantool's fiber.top) from one greenlet trace hook.

greenlet calls the hook on every switch with (origin, target). The hook reads
time.perf_counter() once and charges the interval since the previous switch to `origin`:
the time origin held the loop (in a single-threaded loop, wall time between switches is
that greenlet's time, including any blocking call it made by mistake). It also counts a
switch into `target` and records who runs now and since when, for the watchdog.

Hot-path choices, measured in bench/runtime.py (the hook runs twice per sleep(0)):
- counters live as plain attributes on the greenlets themselves (Fiber sets them in
  __init__; the hub and the main greenlet get them at install; any other greenlet gets
  them on its first switch), so the hook has no type dispatch and no dict lookups;
- the shared state is a __slots__ object reached through a closure cell;
- windows are closed by a repeating loop timer (real time, unreferenced), not checked
  on every switch.

Every `window` seconds the CPU time charged in that window becomes each fiber's
`cpu_instant` (share of the loop, 0..1) and is folded into `cpu_average` (an exponential
moving average). Time in the hub (callbacks, and waiting for I/O while idle) is its own
row; so is the main greenlet; "other" is what is left: plain gevent greenlets and the last
slices of fibers that died during the window.

The hook is per thread (greenlet.settrace) and shared by every Runtime started in that
thread (see _ThreadHook); it chains to any hook installed before it (gevent's monitor
thread uses one too) and restores it when the last Runtime stops.
"""
from time import perf_counter

import greenlet
from gevent import monkey

EMA_ALPHA = 0.3  # weight of the newest window in cpu_average
COUNTERS = ("cpu_time", "switches", "cpu_mark", "cpu_instant", "cpu_average")


def add_counters(g):
    """Give greenlet g the accounting attributes (idempotent)."""
    for name in COUNTERS:
        if not hasattr(g, name):
            setattr(g, name, 0 if name == "switches" else 0.0)


class _State:
    """What the hook writes and the watchdog thread reads."""

    __slots__ = ("last", "running")

    def __init__(self):
        self.last = perf_counter()  # time of the last switch (= since when `running` runs)
        self.running = None  # greenlet that got the loop at the last switch


def _make_full_hook(st, prev):
    perf = perf_counter

    def hook(event, args):
        now = perf()
        origin, target = args
        try:
            origin.cpu_time += now - st.last
        except AttributeError:  # first switch of a greenlet the runtime did not create
            _adopt(origin, "cpu_time", now - st.last)
        try:
            target.switches += 1
        except AttributeError:
            _adopt(target, "switches", 1)
        st.last = now
        st.running = target

    if prev is None:
        return hook

    def chained(event, args):
        hook(event, args)
        prev(event, args)

    return chained


def _adopt(g, name, amount):
    """Give a foreign greenlet its counters, then add amount to one of them. Never raises:
    an exception in a trace hook would surface in whatever greenlet is switching."""
    try:
        add_counters(g)
        setattr(g, name, getattr(g, name) + amount)
    except Exception:  # pragma: no cover - a greenlet type without a __dict__
        pass


def _make_watch_hook(st, prev):
    perf = perf_counter

    def hook(event, args):
        st.last = perf()
        st.running = args[1]

    if prev is None:
        return hook

    def chained(event, args):
        hook(event, args)
        prev(event, args)

    return chained


class Bucket:
    """The derived "other" row."""

    __slots__ = COUNTERS + ("name",)

    def __init__(self, name):
        self.name = name
        for n in COUNTERS:
            setattr(self, n, 0 if n == "switches" else 0.0)


class _ThreadHook:
    """The one switch hook of a thread, shared by every started Runtime in it.

    Two runtimes started in one thread (an app and a test fixture, say) must not each
    install a hook: chained full hooks would count every switch twice, and whichever
    stopped first could not unhook itself from the middle of the chain. So the hook is
    per thread and reference-counted: it runs in "full" mode while any user wants CPU
    accounting, "watch" mode otherwise, and the hook found before the first user (gevent's
    monitor, a debugger) is chained and restored after the last.
    """

    def __init__(self):
        self.state = _State()
        self.users = []
        self.prev = None
        self.hook = None
        self.mode = None

    def add(self, tracer):
        self.users.append(tracer)
        self._apply()

    def remove(self, tracer):
        if tracer in self.users:
            self.users.remove(tracer)
        self._apply()

    def _apply(self):
        mode = None
        if self.users:
            mode = "full" if any(t.accounting for t in self.users) else "watch"
        if mode == self.mode:
            return
        current = greenlet.gettrace()
        ours = self.hook is not None and current is self.hook
        if mode is None:
            if ours:
                greenlet.settrace(self.prev)
            # else someone hooked in after us and chains to us: leave the chain intact
            self.hook = None
        else:
            if self.mode is None:
                self.prev = current  # chain to whatever is installed now
            make = _make_full_hook if mode == "full" else _make_watch_hook
            self.hook = make(self.state, self.prev)
            if ours or self.mode is None:
                greenlet.settrace(self.hook)
        self.mode = mode


_THREAD_HOOKS = {}  # native thread id -> _ThreadHook (runtime-internal, per thread)
_get_ident = monkey.get_original("_thread", "get_ident")


def _thread_hook():
    ident = _get_ident()
    th = _THREAD_HOOKS.get(ident)
    if th is None:
        th = _THREAD_HOOKS[ident] = _ThreadHook()
    return th


class SwitchTracer:
    """One Runtime's view of the thread's switch hook: its windows and its top() rows."""

    def __init__(self, runtime, accounting=True, window=1.0):
        self.runtime = runtime
        self.accounting = accounting
        self.window = window
        self.hub = None
        self.main = None
        self.other = Bucket("other")
        self._thread = None
        self.state = None
        self._timer = None
        self._win_start = perf_counter()

    @property
    def running(self):
        return self.state.running if self.state is not None else None

    @property
    def since(self):
        return self.state.last if self.state is not None else 0.0

    # -- install ---------------------------------------------------------------------------
    def install(self, hub):
        if self._thread is not None:
            return
        self.hub = hub
        current = greenlet.getcurrent()
        main = current
        while main.parent is not None:
            main = main.parent
        self.main = main
        th = _thread_hook()
        self._thread = th
        self.state = th.state
        if not th.users:
            th.state.running = current
            th.state.last = perf_counter()
        self._win_start = perf_counter()
        if self.accounting:
            # The hub and main greenlet outlive runtimes: start their window afresh.
            for g in [hub, main, current] + list(self.runtime._fibers.values()):
                add_counters(g)
                g.cpu_mark = g.cpu_time
            if self.window:
                self._timer = hub.loop.timer(self.window, self.window)
                self._timer.ref = False  # must not keep the loop alive
                self._timer.start(self.roll)
        th.add(self)

    def uninstall(self):
        if self._thread is None:
            return
        self._thread.remove(self)
        self._thread = None
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None

    # -- windows ---------------------------------------------------------------------------
    def _charge_running(self, now):
        """Charge the greenlet running now up to `now`, so readings include its slice."""
        st = self.state
        running = st.running
        if running is not None:
            try:
                running.cpu_time += now - st.last
            except AttributeError:
                pass
            st.last = now

    def rows_sources(self):
        return list(self.runtime._fibers.values()) + [self.hub, self.main]

    def roll(self, now=None):
        """Close the current window: set cpu_instant, fold it into cpu_average."""
        if now is None:
            now = perf_counter()
        elapsed = now - self._win_start
        if elapsed <= 0 or not self.accounting:
            return
        self._charge_running(now)
        known = 0.0
        for acct in self.rows_sources():
            spent = acct.cpu_time - acct.cpu_mark
            known += spent
            self._fold(acct, spent / elapsed)
        other = self.other
        spent = max(0.0, elapsed - known)
        other.cpu_time += spent
        self._fold(other, spent / elapsed)
        self._win_start = now

    @staticmethod
    def _fold(acct, share):
        acct.cpu_instant = share
        acct.cpu_average = EMA_ALPHA * share + (1 - EMA_ALPHA) * acct.cpu_average
        acct.cpu_mark = acct.cpu_time

    def top(self):
        """Rows (dicts) for every live fiber plus hub/main/other, busiest first.

        Keys: id (None for the pseudo-rows), name, status, cpu_time (seconds since
        accounting began), switches (times switched to), instant and average (percent of
        the loop: last closed window / moving average over windows).
        """
        now = perf_counter()
        if self.window and now - self._win_start >= self.window:
            self.roll(now)  # the timer may not have run yet (the loop was busy)
        self._charge_running(now)
        rows = [_row(f.id, f.name, f.status, f) for f in self.runtime._fibers.values()]
        rows.append(_row(None, "hub", "system", self.hub))
        rows.append(_row(None, "main", "system", self.main))
        rows.append(_row(None, "other", "system", self.other))
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
