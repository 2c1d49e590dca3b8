import random

import pytest

from fiberapp.loadgen.histogram import Histogram


def exact(values, p):
    s = sorted(values)
    import math
    return s[max(1, math.ceil(len(s) * p / 100)) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_one_percent_of_exact(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.record(v)
    for p in (50, 90, 95, 99, 99.9, 100):
        assert h.percentile(p) == pytest.approx(exact(values, p), rel=0.011)
    assert h.count == 5000 and h.max == max(values) and h.min == min(values)


def test_merge_equals_recording_everything_and_survives_json():
    rng = random.Random(5)
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(2000):
        v = rng.expovariate(100)
        (a if i % 3 else b).record(v)
        both.record(v)
    merged = Histogram.from_json(a.to_json()).merge(Histogram.from_json(b.to_json()))
    assert merged.buckets == both.buckets and merged.count == both.count
    assert merged.summary() == pytest.approx(both.summary())


def test_empty_and_tiny_values():
    h = Histogram()
    assert h.percentile(50) is None and h.summary()["p99"] is None
    h.record(0.0)
    h.record(1e-9)
    assert h.percentile(100) == 1e-9 and 0.0 <= h.percentile(50) <= 1e-6  # bucket 0: [0, 1 us]
