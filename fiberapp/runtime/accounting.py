"""Per-fiber CPU accounting (Tarantool's fiber.top) from one greenlet trace hook.

greenlet calls the hook on every switch with (origin, target). The hook reads
time.perf_counter() once and charges the interval since the previous switch to `origin`:
the time origin held the loop (in a single-threaded loop, wall time between switches is
that greenlet's time, including any blocking call it made by mistake). It also counts a
switch into `target` and records who runs now and since when, for the watchdog.

Hot-path choices, measured in bench/runtime.py (the hook runs twice per sleep(0)) and
with cachegrind (a socket ping-pong between two greenlets, 4 switches per round):
- each greenlet's two hot counters live in one small list, [cpu_time, switches], kept
  in the greenlet's ``_cpu_acct`` attribute (Fiber creates it in __init__; the hub and
  the main greenlet get it at install; any other greenlet on its first switch). The
  hook keeps the list of the greenlet running now in the shared state, so charging the
  origin is a list update, and the one attribute read per switch is the target's list.
  Writing float attributes on greenlets instead (a generic getattr and setattr through
  the greenlet's __dict__ per counter) cost ~1,000 instructions more per switch: the
  hook took 4,300 instructions per switch, now 3,400; an empty hook costs 1,500 (the
  greenlet module's call into Python) and the watchdog's hook 2,050;
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
WINDOW_COUNTERS = ("cpu_mark", "cpu_instant", "cpu_average")  # written once per window


def new_acct():
    """A greenlet's hot counters: [cpu_time (seconds), switches (times switched to)]."""
    return [0.0, 0]


def acct(g):
    """Greenlet g's [cpu_time, switches] list, created on first use. Never raises: it runs
    inside the switch hook, where an exception would surface in whatever greenlet is
    switching."""
    try:
        return g._cpu_acct
    except AttributeError:
        pass
    a = new_acct()
    try:
        g._cpu_acct = a
    except Exception:  # pragma: no cover - a greenlet type without a __dict__
        pass
    return a


def cpu_time(g):
    """Seconds of loop time charged to greenlet g (any greenlet; 0.0 if never charged)."""
    a = getattr(g, "_cpu_acct", None)
    return a[0] if a is not None else 0.0


def switches(g):
    """Times greenlet g was switched to while accounting ran."""
    a = getattr(g, "_cpu_acct", None)
    return a[1] if a is not None else 0


def add_counters(g):
    """Give greenlet g the accounting attributes (idempotent)."""
    acct(g)
    for name in WINDOW_COUNTERS:
        if not hasattr(g, name):
            setattr(g, name, 0.0)


class _State:
    """What the hook writes and the watchdog thread reads."""

    __slots__ = ("last", "running", "acc", "counting")

    def __init__(self):
        self.last = perf_counter()  # time of the last switch (= since when `running` runs)
        self.running = None  # greenlet that got the loop at the last switch
        self.acc = new_acct()  # running's counters (kept only while counting)
        self.counting = False  # CPU accounting on (else the hook only watches)


def _make_hook(st, prev):
    """The thread's switch hook. It always records who runs since when (the watchdog reads
    that); while st.counting it also charges the time since the last switch to origin and
    counts a switch into target. One hook for its whole life, the mode a flag: a hook
    installed after ours (gevent's monitor thread, a profiler) chains to this function,
    so switching accounting on or off on demand must not need a new one."""
    perf = perf_counter

    def hook(event, args):
        now = perf()
        origin, target = args
        if st.counting:
            if origin is st.running:
                st.acc[0] += now - st.last
            else:  # the hook did not see origin start running (installed meanwhile)
                acct(origin)[0] += now - st.last
            try:
                acc = target._cpu_acct
            except AttributeError:  # first switch of a greenlet the runtime did not create
                acc = acct(target)
            acc[1] += 1
            st.acc = acc
        st.last = now
        st.running = target

    if prev is None:
        return hook

    def chained(event, args):
        hook(event, args)
        prev(event, args)

    return chained


class Bucket:
    """The derived "other" row."""

    __slots__ = WINDOW_COUNTERS + ("name", "_cpu_acct")

    def __init__(self, name):
        self.name = name
        self._cpu_acct = new_acct()
        for n in WINDOW_COUNTERS:
            setattr(self, n, 0.0)


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

    def refresh(self):
        """A user switched its accounting on or off (on demand)."""
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
            # (ours then only watches, and nobody reads what it writes)
            self.hook = None
            self.state.counting = False
        else:
            st = self.state
            if mode == "full" and not st.counting:
                # called in the loop's thread: the current greenlet runs
                st.running = greenlet.getcurrent()
                st.acc = acct(st.running)
            st.counting = mode == "full"
            if self.mode is None:
                self.prev = current  # chain to whatever is installed now
                self.hook = _make_hook(st, self.prev)
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


ON_DEMAND = "on-demand"
DEMAND_LINGER = 60.0  # on demand: seconds accounting stays on after the last top()


class SwitchTracer:
    """One Runtime's view of the thread's switch hook: its windows and its top() rows.

    accounting is True (always on), False (never: the hook, if any, only watches for the
    watchdog) or "on-demand": off until someone reads top() (demand()), then on until
    nobody has read it for `linger` seconds (checked when a window closes).
    """

    def __init__(self, runtime, accounting=True, window=1.0, linger=DEMAND_LINGER):
        self.runtime = runtime
        self.on_demand = accounting == ON_DEMAND
        self.accounting = bool(accounting) and not self.on_demand  # on now
        self.window = window
        self.linger = linger
        self.hub = None
        self.main = None
        self.other = Bucket("other")
        self._thread = None
        self.state = None
        self._timer = None
        self._win_start = perf_counter()
        self._demanded = 0.0
        self._counting_since = 0.0  # on demand: when counting was last switched on

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
            self._begin(current)
        th.add(self)

    def _begin(self, current):
        """Start counting: fresh windows for every row, and the roll timer."""
        # The hub and main greenlet outlive runtimes: start their window afresh.
        for g in [self.hub, self.main, current, self.other] + list(self.runtime._fibers.values()):
            add_counters(g)
            g.cpu_mark = acct(g)[0]
            if self.on_demand:  # what the last stretch measured is stale by now
                g.cpu_instant = g.cpu_average = 0.0
        self._win_start = perf_counter()
        if self.window and self._timer is None:
            self._timer = self.hub.loop.timer(self.window, self.window)
            self._timer.ref = False  # must not keep the loop alive
            self._timer.start(self.roll)

    def _stop_timer(self):
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None

    def uninstall(self):
        if self._thread is None:
            return
        self._thread.remove(self)
        self._thread = None
        self._stop_timer()

    # -- on demand -------------------------------------------------------------------------
    def demand(self):
        """Someone reads top(): with on-demand accounting, switch it on (or keep it on for
        another `linger` seconds). Returns how many seconds are left until a first window
        has been measured (0.0 once one has, or when accounting is not on demand): every
        caller in that first window, not only the one that switched counting on, should
        wait that long before reading. Call in the loop's thread."""
        if not self.on_demand or self._thread is None:
            return 0.0
        now = self._demanded = perf_counter()
        if not self.accounting:
            self._begin(greenlet.getcurrent())
            self.accounting = True
            self._thread.refresh()  # the thread's hook counts from now on
            self._counting_since = now
        return max(0.0, self._counting_since + self.window - now)

    def _lapse(self):
        """On demand, nobody has read top() for `linger` seconds: back to watching only."""
        self.accounting = False
        self._stop_timer()
        if self._thread is not None:
            self._thread.refresh()

    # -- windows ---------------------------------------------------------------------------
    def _charge_running(self, now):
        """Charge the greenlet running now up to `now`, so readings include its slice."""
        st = self.state
        running = st.running
        if running is not None:
            acct(running)[0] += now - st.last
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
        for g in self.rows_sources():
            add_counters(g)  # a fiber spawned before install has no window counters yet
            spent = acct(g)[0] - g.cpu_mark
            known += spent
            self._fold(g, spent / elapsed)
        other = self.other
        spent = max(0.0, elapsed - known)
        other._cpu_acct[0] += spent
        self._fold(other, spent / elapsed)
        self._win_start = now
        if self.on_demand and now - self._demanded > self.linger:
            self._lapse()

    @staticmethod
    def _fold(g, share):
        g.cpu_instant = share
        g.cpu_average = EMA_ALPHA * share + (1 - EMA_ALPHA) * g.cpu_average
        g.cpu_mark = acct(g)[0]

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


def _row(fid, name, status, g):
    a = acct(g)
    return {
        "id": fid,
        "name": name,
        "status": status,
        "cpu_time": a[0],
        "switches": a[1],
        "instant": round(getattr(g, "cpu_instant", 0.0) * 100.0, 2),
        "average": round(getattr(g, "cpu_average", 0.0) * 100.0, 2),
    }
