"""What a load run measured, mergeable across worker processes, and its report.

Counting contract (what tests compare with the server's own counts):
- ``requests[ep]`` counts requests that got an HTTP response, whatever its status;
  a non-2xx status is also counted in ``errors["http <status>"]`` and ``failed[ep]``.
- transport failures (connect, closed, timeout, protocol) are counted only in
  ``errors[kind]`` and ``failed[ep]``;
- ``connects`` times new connections apart from any endpoint (a request's latency
  starts once its connection is open); ``pipelined`` counts requests sent on a
  connection shared by several drivers while an earlier one there was unanswered;
- ``lag``: how late a probe fiber woke from LAG_PROBE-second sleeps, i.e. the
  generator's own loop delay (CPU starvation shows here, not as server latency);
- ``abandoned[ep]`` counts requests still waiting for their answer when the run ended
  (long-polls, mostly): the server saw them, the generator stopped listening.
- orders are keyed by id: when the order was created and accepted (monotonic
  seconds, comparable across processes on one machine: CLOCK_MONOTONIC) and the final
  state read back at the end. Dispatch latency = accepted - created, as seen by the
  generator (response to response).
"""
from fiberapp.loadgen.histogram import Histogram

ENDPOINTS = (
    "location", "offer_poll", "offer_accept", "offer_decline", "arriving", "complete",
    "order_create", "order_get", "order_cancel", "final_check", "stats",
)
LAG_PROBE = 0.05  # seconds between the lag probe's wake-ups (taxi.Simulation)
LAG_WARN = 0.02  # a loop lag p99 above this: the generator's figures are its own delay too
FINAL_ORDER = ("created", "offered", "accepted", "arriving", "completed", "cancelled", "unknown")


class Results:
    def __init__(self):
        self.requests = {}
        self.failed = {}
        self.abandoned = {}
        self.latency = {}  # ep -> Histogram (responses only)
        self.connects = Histogram()
        self.pipelined = 0  # requests sent behind an unanswered one on a shared connection
        self.lag = Histogram()  # how late the generator's own loop woke a probe fiber
        self.errors = {}  # kind -> n
        self.orders = {}  # id (str) -> {"created": t, "accepted": t, "state": s}
        self.elapsed = 0.0
        self.notes = []
        self.server_stats = None
        self.inflight = 0  # live only: requests sent and not yet answered

    # -- recording (hot path) ---------------------------------------------------

    def response(self, ep, status, seconds):
        self.requests[ep] = self.requests.get(ep, 0) + 1
        h = self.latency.get(ep)
        if h is None:
            h = self.latency[ep] = Histogram()
        h.record(seconds)
        if not 200 <= status < 300:
            self.failed[ep] = self.failed.get(ep, 0) + 1
            kind = f"http {status}"
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def connected(self, seconds):
        self.connects.record(seconds)

    def failure(self, ep, kind):
        self.failed[ep] = self.failed.get(ep, 0) + 1
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def abandon(self, ep):
        self.abandoned[ep] = self.abandoned.get(ep, 0) + 1

    def order_created(self, order_id, t):
        self.orders[str(order_id)] = {"created": t, "accepted": None, "state": "created"}

    def order_accepted(self, order_id, t):
        rec = self.orders.setdefault(str(order_id), {"created": None, "accepted": None, "state": None})
        rec["accepted"] = t

    def order_state(self, order_id, state):
        rec = self.orders.setdefault(str(order_id), {"created": None, "accepted": None, "state": None})
        rec["state"] = state

    def total_requests(self):
        return sum(self.requests.values())

    def total_errors(self):
        return sum(self.errors.values())

    # -- transport between processes -----------------------------------------------

    def to_json(self):
        return {
            "requests": self.requests, "failed": self.failed, "abandoned": self.abandoned,
            "latency": {ep: h.to_json() for ep, h in self.latency.items()},
            "connects": self.connects.to_json(), "pipelined": self.pipelined, "lag": self.lag.to_json(),
            "errors": self.errors, "orders": self.orders, "elapsed": self.elapsed,
            "notes": self.notes, "server_stats": self.server_stats,
        }

    @classmethod
    def from_json(cls, data):
        r = cls()
        r.requests, r.failed, r.abandoned = data["requests"], data["failed"], data["abandoned"]
        r.latency = {ep: Histogram.from_json(h) for ep, h in data["latency"].items()}
        r.connects = Histogram.from_json(data["connects"])
        r.pipelined = data["pipelined"]
        r.lag = Histogram.from_json(data["lag"])
        r.errors, r.orders, r.elapsed = data["errors"], data["orders"], data["elapsed"]
        r.notes, r.server_stats = data["notes"], data["server_stats"]
        return r

    def merge(self, other):
        for mine, theirs in ((self.requests, other.requests), (self.failed, other.failed),
                             (self.abandoned, other.abandoned), (self.errors, other.errors)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for ep, h in other.latency.items():
            self.latency.setdefault(ep, Histogram()).merge(h)
        self.connects.merge(other.connects)
        self.pipelined += other.pipelined
        self.lag.merge(other.lag)
        # An order is created by one worker and accepted by a driver in any worker:
        # join field by field.
        for oid, rec in other.orders.items():
            mine = self.orders.setdefault(oid, {"created": None, "accepted": None, "state": None})
            for field in ("created", "accepted", "state"):
                if rec.get(field) is not None:
                    mine[field] = rec[field]
        self.elapsed = max(self.elapsed, other.elapsed)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.server_stats = self.server_stats or other.server_stats
        return self

    # -- report -----------------------------------------------------------------

    def dispatch_latency(self):
        h = Histogram()
        for rec in self.orders.values():
            if rec["created"] is not None and rec["accepted"] is not None:
                h.record(max(0.0, rec["accepted"] - rec["created"]))
        return h

    def report(self, config=None):
        """The JSON-able summary: what --json prints and the table shows."""
        elapsed = self.elapsed or 1e-9
        endpoints = {}
        for ep in ENDPOINTS:
            n = self.requests.get(ep, 0)
            if not (n or self.failed.get(ep) or self.abandoned.get(ep)):
                continue
            s = self.latency[ep].summary() if ep in self.latency else {}
            endpoints[ep] = {
                "requests": n, "rps": n / elapsed, "failed": self.failed.get(ep, 0),
                "abandoned": self.abandoned.get(ep, 0),
                "p50": s.get("p50"), "p95": s.get("p95"), "p99": s.get("p99"), "max": s.get("max"),
            }
        by_state = {}
        for rec in self.orders.values():
            if rec["created"] is None:
                continue  # seen only by a driver: created by a client outside this run
            state = rec["state"] or "unknown"
            by_state[state] = by_state.get(state, 0) + 1
        d = self.dispatch_latency().summary()
        c = self.connects.summary()
        g = self.lag.summary()
        return {
            "config": config,
            "elapsed": self.elapsed,
            "requests": self.total_requests(),
            "rps": self.total_requests() / elapsed,
            "endpoints": endpoints,
            "dispatch_latency": {k: d[k] for k in ("count", "p50", "p95", "p99", "max")},
            "connects": {k: c[k] for k in ("count", "p50", "p95", "p99", "max")},
            "pipelined": self.pipelined,
            "generator_lag": {k: g[k] for k in ("count", "p50", "p99", "max")},
            "orders": {s: by_state[s] for s in sorted(by_state, key=_state_rank)},
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])),
            "server_stats": self.server_stats,
            "notes": self.notes,
        }


def _state_rank(state):
    return FINAL_ORDER.index(state) if state in FINAL_ORDER else len(FINAL_ORDER)


def _ms(v):
    return "-" if v is None else f"{v * 1000:.1f}"


def format_report(rep):
    """The human table, from report()."""
    lines = [
        f"duration {rep['elapsed']:.1f} s, {rep['requests']} requests, {rep['rps']:.0f} req/s",
        "",
        f"{'endpoint':<14}{'requests':>10}{'req/s':>9}{'failed':>8}{'open@end':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for ep, e in rep["endpoints"].items():
        lines.append(
            f"{ep:<14}{e['requests']:>10}{e['rps']:>9.1f}{e['failed']:>8}{e['abandoned']:>9}"
            f"{_ms(e['p50']):>9}{_ms(e['p95']):>9}{_ms(e['p99']):>9}{_ms(e['max']):>9}"
        )
    d = rep["dispatch_latency"]
    c = rep["connects"]
    g = rep["generator_lag"]
    lines += [
        "",
        f"connections opened {c['count']}: p50 {_ms(c['p50'])} ms, p99 {_ms(c['p99'])} ms, max {_ms(c['max'])} ms",
        f"requests pipelined behind an unanswered one on a shared driver connection: {rep['pipelined']}",
        f"generator loop lag (a probe's {LAG_PROBE * 1000:.0f} ms sleeps overshot by): p50 {_ms(g['p50'])} ms, "
        f"p99 {_ms(g['p99'])} ms, max {_ms(g['max'])} ms",
        f"dispatch latency (order created -> accepted), {d['count']} orders: "
        f"p50 {_ms(d['p50'])} ms, p95 {_ms(d['p95'])} ms, p99 {_ms(d['p99'])} ms",
        "orders by final state: " + (", ".join(f"{s} {n}" for s, n in rep["orders"].items()) or "none"),
        "errors by kind: " + (", ".join(f"{k} {n}" for k, n in rep["errors"].items()) or "none"),
    ]
    if g["p99"] is not None and g["p99"] > LAG_WARN:
        lines.append(f"WARNING: the generator itself ran late (loop lag p99 {_ms(g['p99'])} ms): it got less CPU "
                     f"than it needs, and every latency above includes its own delay")
    srv = rep.get("server_stats")
    if isinstance(srv, dict) and isinstance(srv.get("dispatch_latency"), dict):
        sd = srv["dispatch_latency"]
        num = lambda v: _ms(v) if isinstance(v, (int, float)) else "-"  # noqa: E731
        lines.append(f"server-side dispatch latency: p50 {num(sd.get('p50'))} ms, p95 {num(sd.get('p95'))} ms, "
                     f"p99 {num(sd.get('p99'))} ms")
    for note in rep["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
