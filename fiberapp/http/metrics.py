"""Request metrics per route and status, on a prometheus_client registry passed in.

    fiberapp_http_requests_total{route, method, status}             counter
    fiberapp_http_request_duration_seconds{route, method}           histogram

``route`` is the route's pattern (its name), never the concrete path, so the number of
label sets stays bounded by the route table. Label children are cached, since
labels() is far slower than inc()/observe() on the hot path.
"""
from prometheus_client import Counter, Histogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class HTTPMetrics:
    def __init__(self, registry, namespace="fiberapp", buckets=BUCKETS):
        self.requests = Counter("http_requests", "HTTP requests answered, by route, method and status",
                                ("route", "method", "status"), namespace=namespace, registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Time spent in the handler, by route and method",
                                 ("route", "method"), namespace=namespace, registry=registry, buckets=buckets)
        self._counters = {}
        self._histograms = {}

    def observe(self, route, method, status, seconds):
        key = (route, method, status)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = self.requests.labels(route, method, str(status))
        c.inc()
        hkey = (route, method)
        h = self._histograms.get(hkey)
        if h is None:
            h = self._histograms[hkey] = self.latency.labels(route, method)
        h.observe(seconds)
