"""Request metrics per route and status, exported into a prometheus_client registry.

    fiberapp_http_requests_total{route, method, status}             counter
    fiberapp_http_request_duration_seconds{route, method}           histogram

``route`` is the route's pattern (its name), never the concrete path, so the number of
label sets stays bounded by the route table.

Why not prometheus_client's Counter and Histogram: every inc()/observe() takes a lock,
and under gevent's patching that is a gevent lock (a Cython semaphore plus Python
wrappers); with the label lookup and the bucket scan that came to ~9 µs per request, as
much as routing, parsing and answering a request together. Requests are counted here in
plain dicts instead, by the one thread that serves HTTP (connection fibers never preempt
each other, so a read-modify-write cannot interleave), and HTTPMetrics is a custom
collector that turns the counts into the same metric families at scrape time: the text
at /metrics is what the Counter and Histogram gave, ``_created`` samples included.
"""
from bisect import bisect_left

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_INF = float("inf")


class HTTPMetrics:
    """Counts requests; registered on ``registry`` as a collector.

    ``clock`` supplies the wall-clock ``_created`` timestamps (clock.time()).
    """

    def __init__(self, registry, namespace="fiberapp", buckets=BUCKETS, clock=None):
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != _INF:
            bounds.append(_INF)
        self._bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)
        self._requests_name = f"{namespace}_http_requests"
        self._latency_name = f"{namespace}_http_request_duration_seconds"
        if clock is None:
            from fiberapp.runtime.clock import SystemClock

            clock = SystemClock()
        self._clock = clock
        # (route, method) -> ([count per bucket..., sum], {status: count}): one tuple key
        # and one lookup per request (a second (route, method, status) key and lookup cost
        # ~1,500 instructions more)
        self._routes = {}
        self._created = {}  # (route, method) or (route, method, status) -> clock.time() when first seen
        registry.register(self)  # refuses a second HTTPMetrics on the same registry

    def observe(self, route, method, status, seconds):
        """Count one answered request: the hot path, one dict lookup, a dict update and a
        list update."""
        rec = self._routes.get((route, method))
        if rec is None:
            rec = self._add(route, method, status)
        h, statuses = rec
        n = statuses.get(status)
        if n is None:
            self._created[(route, method, status)] = self._clock.time()
            n = 0
        statuses[status] = n + 1
        # bisect_left: the first bucket whose upper bound is >= seconds (prometheus' "le")
        h[bisect_left(self._bounds, seconds)] += 1
        h[-1] += seconds

    def _add(self, route, method, status):
        """A (route, method) seen for the first time, with its first status: the counter's
        _created is taken before the histogram's, as the request counts them."""
        key = (route, method)
        self._created[(route, method, status)] = self._clock.time()
        self._created[key] = self._clock.time()
        rec = self._routes[key] = ([0] * len(self._bounds) + [0.0], {status: 0})
        return rec

    # -- the collector interface (read by the registry at scrape time) --------------------
    def describe(self):
        return [
            CounterMetricFamily(self._requests_name, _REQUESTS_DOC, labels=("route", "method", "status")),
            HistogramMetricFamily(self._latency_name, _LATENCY_DOC, labels=("route", "method")),
        ]

    def collect(self):
        created = self._created
        requests = CounterMetricFamily(self._requests_name, _REQUESTS_DOC, labels=("route", "method", "status"))
        routes = list(self._routes.items())
        # In the order each (route, method, status) was first seen (_created keeps it),
        # not grouped by route: the order prometheus_client's Counter gave.
        for key, first_seen in list(created.items()):
            if len(key) == 3:
                route, method, status = key
                n = self._routes[(route, method)][1][status]
                requests.add_metric((route, method, str(status)), float(n), created=first_seen)
        yield requests
        latency = HistogramMetricFamily(self._latency_name, _LATENCY_DOC, labels=("route", "method"))
        le = self._le
        for key, (h, _) in routes:
            total = 0
            buckets = []
            for i, name in enumerate(le):
                total += h[i]
                buckets.append((name, float(total)))
            latency.add_metric(key, buckets, h[-1])
            latency.samples.append(Sample(self._latency_name + "_created", {"route": key[0], "method": key[1]},
                                          created[key]))
        yield latency


_REQUESTS_DOC = "HTTP requests answered, by route, method and status"
_LATENCY_DOC = "Time spent in the handler, by route and method"
