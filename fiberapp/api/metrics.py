"""Prometheus collectors for /metrics: read at scrape time, never updated on the hot path.

StoreCollector reports what the store, the runtime, persistence and the API's sessions
already count (tube statistics, fiber counts, WAL figures), so serving a request costs
nothing extra for metrics. HTTP latency per route is recorded by the HTTP server into
the same registry. LoopLag measures how late the loop wakes a sleeping fiber: the delay
every other fiber suffers too.
"""
import re

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class StoreCollector:
    """Collects from an Api's store/runtime/persistence/sessions at scrape time."""

    def __init__(self, api, loop_lag=None):
        self.api = api
        self.loop_lag = loop_lag

    def describe(self):
        return []  # collect-time figures: nothing to check at registration

    def collect(self):
        api = self.api
        tasks = GaugeMetricFamily("fiberapp_queue_tasks", "Tasks per tube and state", labels=["tube", "state"])
        calls = CounterMetricFamily("fiberapp_queue_calls", "Queue calls per tube and kind", labels=["tube", "call"])
        for tube in (_tubes(api.store) if api.has_store else ()):
            stats = tube.statistics()
            for state, n in stats.get("tasks", {}).items():
                tasks.add_metric([tube.name, state], n)
            for call, n in stats.get("calls", {}).items():
                calls.add_metric([tube.name, call], n)
        yield tasks
        yield calls

        if api.runtime is not None:
            rt = api.runtime.stats()
            yield GaugeMetricFamily("fiberapp_fibers", "Live fibers", value=rt.get("fibers", 0))
            yield CounterMetricFamily("fiberapp_fibers_spawned", "Fibers spawned", value=rt.get("spawned", 0))
            yield CounterMetricFamily("fiberapp_fibers_died", "Fibers ended", value=rt.get("died", 0))
            yield CounterMetricFamily("fiberapp_watchdog_reports", "Fibers caught holding the loop",
                                      value=rt.get("watchdog_reports", 0))

        if self.loop_lag is not None:
            yield GaugeMetricFamily("fiberapp_loop_lag_seconds", "Last measured event-loop lag",
                                    value=self.loop_lag.last)
            yield GaugeMetricFamily("fiberapp_loop_lag_max_seconds", "Largest loop lag since start",
                                    value=self.loop_lag.max)

        yield GaugeMetricFamily("fiberapp_api_sessions", "Open HTTP consumer sessions", value=len(api.sessions))
        yield CounterMetricFamily("fiberapp_api_sessions_expired", "HTTP sessions ended by session_ttl",
                                  value=api.sessions.ended)

        if api.persistence is not None:
            stats = api.persistence.stats() or {}
            for key, value in sorted(_flatten(stats)):
                if isinstance(value, bool):
                    value = int(value)
                if isinstance(value, (int, float)):
                    yield GaugeMetricFamily(f"fiberapp_persist_{_NAME.sub('_', key)}",
                                            f"Persistence: {key}", value=value)


def _flatten(stats, prefix=""):
    for key, value in stats.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}_")
        else:
            yield f"{prefix}{key}", value


def _tubes(store):
    tubes = store.tubes()
    if isinstance(tubes, dict):
        return list(tubes.values())
    return [store.tube(t) if isinstance(t, str) else t for t in tubes]


class LoopLag:
    """A fiber that sleeps ``interval`` and records how much later than asked it woke."""

    def __init__(self, clock, interval=1.0):
        self.clock = clock
        self.interval = interval
        self.last = 0.0
        self.max = 0.0

    def run(self):
        while True:
            start = self.clock.monotonic()
            self.clock.sleep(self.interval)
            lag = max(0.0, self.clock.monotonic() - start - self.interval)
            self.last = lag
            if lag > self.max:
                self.max = lag
