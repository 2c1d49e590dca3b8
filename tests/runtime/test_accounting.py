"""CPU accounting (fiber.top) and the watchdog, on the real clock: what is measured here
is CPU, which a FakeClock cannot fake. Assertions compare fibers, never absolute timings."""
import logging
import time

import gevent
import gevent.event
import greenlet
import pytest

from fiberapp.runtime import accounting
from fiberapp.runtime.errors import FiberError
from fiberapp.runtime.fiber import Runtime


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_busy_fiber_gets_more_cpu_than_an_idle_one_and_switches_are_counted():
    rt = Runtime(watchdog_limit=0, top_window=3600)
    rt.start()
    try:
        gate = gevent.event.Event()

        def busy():
            for _ in range(5):
                _spin(0.01)
                gevent.sleep(0)  # yields: 5 more switches into this fiber

        def idle():
            gate.wait()

        b = rt.spawn(busy, name="busy")
        i = rt.spawn(idle, name="idle")
        b.join()
        rows = {r["name"]: r for r in rt.top()}
        assert "busy" not in rows  # dead fibers leave top()
        assert b.cpu_time >= 0.05
        assert b.cpu_time > 2 * rows["idle"]["cpu_time"]  # margin: the OS may deschedule us anywhere
        assert b.switches == 6  # first run + 5 resumptions after sleep(0)
        assert i.switches == 1
        assert rows["idle"]["switches"] == 1 and rows["idle"]["status"] == "suspended"
        assert {"hub", "main", "other"} <= set(rows)
        gate.set()
        i.join()
    finally:
        rt.stop()


def test_top_is_sorted_by_recent_share_and_windows_roll():
    rt = Runtime(watchdog_limit=0, top_window=0.05)
    rt.start()
    try:
        gate = gevent.event.Event()

        def hot():
            _spin(0.12)  # spans more than one window: the hook rolls it at the next switch
            gate.wait()

        def cold():
            gate.wait()

        h = rt.spawn(hot, name="hot")
        c = rt.spawn(cold, name="cold")
        gevent.idle()
        rows = rt.top()
        names = [r["name"] for r in rows]
        assert names.index("hot") < names.index("cold")
        hot_row = rows[names.index("hot")]
        assert hot_row["average"] > 0 and hot_row["cpu_time"] >= 0.12
        assert h.cpu_average > c.cpu_average
        gate.set()
    finally:
        rt.stop()


def test_accounting_off_installs_no_hook_and_reports_zeros():
    before = greenlet.gettrace()
    rt = Runtime(watchdog_limit=0, cpu_accounting=False)
    rt.start()
    try:
        assert greenlet.gettrace() is before
        f = rt.spawn(_spin, 0.01, name="spin")
        f.join()
        g = rt.spawn(gevent.sleep, 0, name="alive")
        rows = rt.top()
        assert [r["name"] for r in rows] == ["alive"] and rows[0]["cpu_time"] == 0.0
        assert rt.stats()["cpu_accounting"] is False
        g.join()
    finally:
        rt.stop()


def test_stop_restores_the_previous_trace_hook():
    before = greenlet.gettrace()
    rt = Runtime(watchdog_limit=0)
    rt.start()
    assert greenlet.gettrace() is not before
    rt.stop()
    assert greenlet.gettrace() is before


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
        self.seen = gevent.event.Event()

    def emit(self, record):
        self.records.append(record)
        self.seen.set()


def test_watchdog_catches_a_hog_with_name_and_stack():
    rt = Runtime(watchdog_limit=0.05)
    handler = _Capture()
    logger = logging.getLogger("fiberapp.watchdog")
    logger.addHandler(handler)
    rt.start()
    try:
        def hog_loop():
            # A real hog: ~0.3 s without yielding (longer only if the watchdog thread
            # has not been scheduled yet on a loaded machine; bounded at 10 s).
            start = time.perf_counter()
            while time.perf_counter() - start < 0.3 or (
                    rt.watchdog.reports == 0 and time.perf_counter() - start < 10):
                pass

        hog = rt.spawn(hog_loop, name="hog")
        hog.join()
        assert handler.seen.wait(timeout=10)  # logged from the loop once the hog yielded
        assert rt.watchdog.reports == 1  # one report per stretch, not one per check
        assert rt.stats()["watchdog_reports"] == 1
        report = rt.watchdog.last_report
        assert report["name"] == "hog" and report["fiber_id"] == hog.id
        assert report["held"] >= 0.05
        assert "hog_loop" in report["stack"]
        record = handler.records[0]
        assert record.levelno == logging.WARNING
        assert "'hog'" in record.getMessage() and "hog_loop" in record.getMessage()
    finally:
        logger.removeHandler(handler)
        rt.stop()


def test_watchdog_ignores_fibers_that_yield():
    rt = Runtime(watchdog_limit=0.5)
    rt.start()
    try:
        def polite():
            for _ in range(100):
                _spin(0.001)
                gevent.sleep(0)

        rt.spawn(polite, name="polite").join()
        assert rt.watchdog.reports == 0
    finally:
        rt.stop()


def test_watchdog_check_rules():
    """check() in isolation: the hub holding the loop is idleness; one report per stretch."""
    from fiberapp.runtime.watchdog import Watchdog

    class Tracer:
        hub = gevent.get_hub()
        running = hub
        since = 100.0

    tr = Tracer()
    wd = Watchdog(tr, 0.1, gevent.get_hub())
    try:
        assert wd.check(now=200.0) is None  # hub: idle, never a hog
        g = gevent.Greenlet(lambda: None)
        g.name = "plain"
        tr.running = g
        assert wd.check(now=100.05) is None  # within the limit
        report = wd.check(now=100.2)
        assert report["name"] == "plain" and report["fiber_id"] is None
        assert abs(report["held"] - 0.2) < 1e-9
        assert wd.check(now=101.0) is None  # same stretch: already reported
        tr.since = 101.0  # it switched: a new stretch
        assert wd.check(now=101.5)["held"] == 0.5
        assert wd.reports == 2
    finally:
        wd.stop()


def test_hub_main_and_other_rows():
    rt = Runtime(watchdog_limit=0, top_window=0.01)
    rt.start()
    try:
        plain = gevent.spawn(_spin, 0.05)  # not a fiber: its time lands in "other"
        plain.join()
        _spin(0.03)  # the main greenlet (this test) holds the loop
        rows = {r["name"]: r for r in rt.top()}
        assert rows["other"]["cpu_time"] >= 0.05 and rows["other"]["id"] is None
        assert rows["main"]["cpu_time"] >= 0.03
        assert rows["hub"]["switches"] >= 1 and rows["hub"]["status"] == "system"
        assert accounting.cpu_time(plain) >= 0.05  # foreign greenlets get counters on first switch
    finally:
        rt.stop()


def test_two_started_runtimes_share_one_hook_and_do_not_double_count():
    before = greenlet.gettrace()
    a = Runtime(watchdog_limit=0, top_window=3600)
    b = Runtime(watchdog_limit=0)
    a.start()
    b.start()
    try:
        hook = greenlet.gettrace()
        assert hook is not before
        fb = b.spawn(_spin, 0.05, name="in-b")
        start = time.perf_counter()
        fb.join()
        wall = time.perf_counter() - start
        assert 0.05 <= fb.cpu_time <= wall  # counted once, not once per runtime
        b.stop()
        assert greenlet.gettrace() is hook  # a still needs it
        fa = a.spawn(_spin, 0.01, name="in-a")
        fa.join()
        assert fa.cpu_time >= 0.01
    finally:
        a.stop()
        b.stop()
    assert greenlet.gettrace() is before


def test_on_demand_accounting_counts_only_once_someone_reads_top():
    before = greenlet.gettrace()
    rt = Runtime(watchdog_limit=0.5, cpu_accounting="on-demand", top_window=0.02)
    rt.start()
    try:
        watch = greenlet.gettrace()
        assert watch is not before  # the watchdog's hook, which does not count
        assert rt.stats()["cpu_accounting"] is False
        early = rt.spawn(_spin, 0.03, name="early")
        early.join()
        assert early.cpu_time == 0.0 and early.switches == 0  # nobody watched: not counted

        gate = gevent.event.Event()
        idle = rt.spawn(gate.wait, name="idle")
        rows = {r["name"]: r for r in rt.top()}  # switches it on, then waits one window
        assert greenlet.gettrace() is watch  # the same hook: it counts now
        assert rt.stats()["cpu_accounting"] is True
        assert rows["main"]["cpu_time"] > 0 and "idle" in rows  # a measured window, not zeros

        late = rt.spawn(_spin, 0.03, name="late")
        late.join()
        assert late.cpu_time >= 0.03 and late.switches == 1
        gate.set()
        idle.join()
    finally:
        rt.stop()
    assert greenlet.gettrace() is before


def test_on_demand_accounting_lapses_when_nobody_reads_top_for_the_linger():
    rt = Runtime(watchdog_limit=0.5, cpu_accounting="on-demand", top_window=0.02, top_linger=60.0)
    rt.start()
    try:
        watch = greenlet.gettrace()
        rt.top()
        tracer = rt._tracer
        assert greenlet.gettrace() is watch
        assert tracer.accounting
        tracer.roll(now=time.perf_counter() + 30.0)  # a window closes within the linger: stays on
        assert tracer.accounting
        tracer.roll(now=time.perf_counter() + 61.0)  # one after it: back to watching only
        assert not tracer.accounting and tracer._timer is None
        assert rt.stats()["cpu_accounting"] is False
        quiet = rt.spawn(_spin, 0.01, name="quiet")
        quiet.join()
        assert quiet.cpu_time == 0.0  # not counted any more
        rows = {r["name"]: r for r in rt.top()}  # the next reader switches it on again
        assert tracer.accounting and rows["main"]["cpu_time"] > 0
    finally:
        rt.stop()


def test_on_demand_counts_when_another_hook_chained_to_ours_after_start():
    """gevent's monitor thread (or a profiler) installs its hook after ours and calls ours
    from it: switching accounting on must not need a new hook of ours."""
    before = greenlet.gettrace()
    rt = Runtime(watchdog_limit=0.5, cpu_accounting="on-demand", top_window=0.02)
    rt.start()
    ours = greenlet.gettrace()
    seen = []

    def later(event, args):  # chains to ours, as gevent's GreenletTracer does
        seen.append(event)
        ours(event, args)

    greenlet.settrace(later)
    try:
        rt.top()  # on from here
        busy = rt.spawn(_spin, 0.03, name="busy")
        busy.join()
        assert seen
        assert busy.cpu_time >= 0.03 and busy.switches == 1
        rt._tracer.roll(now=time.perf_counter() + 61.0)  # lapses: watching only again
        quiet = rt.spawn(_spin, 0.01, name="quiet")
        quiet.join()
        assert quiet.cpu_time == 0.0
    finally:
        greenlet.settrace(ours)
        rt.stop()
    assert greenlet.gettrace() is before


def test_every_top_in_the_first_window_waits_for_a_measured_one():
    rt = Runtime(watchdog_limit=0.5, cpu_accounting="on-demand", top_window=0.05)
    rt.start()
    stop = []

    def busy():
        while not stop:
            _spin(0.002)
            gevent.sleep(0)

    try:
        rt.spawn(busy, name="busy")
        first = rt.spawn(rt.top, name="first")
        gevent.sleep(0)  # first switched accounting on and waits its window
        second = rt.spawn(rt.top, name="second")
        for reader in (first, second):
            rows = {r["name"]: r for r in reader.get(timeout=30)}
            assert rows["busy"]["average"] > 0, rows["busy"]  # a closed window, not zeros
    finally:
        stop.append(True)
        rt.stop()


def test_cpu_accounting_takes_true_false_or_on_demand_only():
    with pytest.raises(FiberError):
        Runtime(cpu_accounting="sometimes")
