"""A small mergeable latency histogram with bounded relative error.

Values (seconds) go into logarithmic buckets about 1 % wide, so recording is one log
and one dict increment, memory is a few hundred buckets whatever the count, and two
histograms merge by adding counts: worker processes send theirs to the parent as plain
JSON. Percentiles are accurate to the bucket width (about 1 %) and clamped to the
exact min and max.
"""
import math

_SCALE = 100.0  # buckets per natural-log unit: width e**(1/100) - 1 ~ 1.005
_FLOOR = 1e-6  # everything at or below 1 microsecond shares bucket 0


class Histogram:
    __slots__ = ("buckets", "count", "total", "min", "max")

    def __init__(self):
        self.buckets = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, value):
        if value <= _FLOOR:
            key = 0
        else:
            key = int(math.log(value / _FLOOR) * _SCALE) + 1
        self.buckets[key] = self.buckets.get(key, 0) + 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def percentile(self, p):
        """The value below which p percent of the recorded values fall (None if empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                upper = _FLOOR if key == 0 else _FLOOR * math.exp(key / _SCALE)
                return min(max(upper, self.min), self.max)
        return self.max  # pragma: no cover - unreachable: counts add up

    def mean(self):
        return self.total / self.count if self.count else None

    def merge(self, other):
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def summary(self):
        """{"count", "p50", "p95", "p99", "max", "mean"}: what reports show."""
        return {
            "count": self.count,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max if self.count else None,
            "mean": self.mean(),
        }

    def to_json(self):
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_json(cls, data):
        h = cls()
        h.buckets = {int(k): v for k, v in data["buckets"].items()}
        h.count = data["count"]
        h.total = data["total"]
        if h.count:
            h.min, h.max = data["min"], data["max"]
        return h
