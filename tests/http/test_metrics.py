"""http.metrics.HTTPMetrics: the text at /metrics is what prometheus_client's own Counter
and Histogram give for the same requests (sample order included), only cheaper to count."""
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fiberapp.http.metrics import BUCKETS, HTTPMetrics

REQUESTS = [("/a", "GET", 200, 0.001), ("/b/{id}", "POST", 201, 0.2), ("/a", "GET", 500, 0.03),
            ("<unmatched>", "GET", 404, 0.0001), ("/a", "HEAD", 200, 0.002), ("/b/{id}", "POST", 201, 7.0),
            ("/a", "GET", 200, 100.0), ("/b/{id}", "POST", 400, 0.0005)]


class TickingClock:
    def __init__(self):
        self.t = 1_700_000_000.0

    def time(self):
        self.t += 1.0
        return self.t


def _samples(registry):
    """(name, labels, value) in exposition order; _created values left out (the reference
    reads the real clock)."""
    out = []
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            value = None if s.name.endswith("_created") else s.value
            out.append((s.name, tuple(sorted(s.labels.items())), value))
    return out


def test_exposition_matches_prometheus_clients_counter_and_histogram():
    ref = CollectorRegistry()
    counter = Counter("fiberapp_http_requests", "x", ("route", "method", "status"), registry=ref)
    hist = Histogram("fiberapp_http_request_duration_seconds", "x", ("route", "method"),
                     buckets=BUCKETS, registry=ref)
    ours = CollectorRegistry()
    metrics = HTTPMetrics(ours, clock=TickingClock())
    for route, method, status, seconds in REQUESTS:
        counter.labels(route, method, str(status)).inc()
        hist.labels(route, method).observe(seconds)
        metrics.observe(route, method, status, seconds)
    assert _samples(ours) == _samples(ref)


def test_created_is_taken_for_the_counter_then_the_histogram_in_first_seen_order():
    reg = CollectorRegistry()
    metrics = HTTPMetrics(reg, clock=TickingClock())
    for request in REQUESTS:
        metrics.observe(*request)
    created = {}
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                created[(s.name, s.labels.get("route"), s.labels.get("method"), s.labels.get("status"))] = s.value
    counter = "fiberapp_http_requests_created"
    hist = "fiberapp_http_request_duration_seconds_created"
    # the first request of /a GET: its status's time, then its route's
    assert created[(counter, "/a", "GET", "200")] < created[(hist, "/a", "GET", None)]
    # a later status of an earlier route is later than the next route's
    assert created[(counter, "/a", "GET", "500")] > created[(hist, "/b/{id}", "POST", None)]
