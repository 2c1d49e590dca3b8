"""The taxi load generator against a small fake taxi server (a test double of the
*server*, written here on gevent.pywsgi) that counts what it sees.

The main test runs on a FakeClock: the fake server's long-polls and the generator's
waits all use it, and the clock jumps to the next deadline only when every request
the generator has in flight is parked in a long-poll on the server (nothing else can
happen until time moves). So a few virtual seconds take a fraction of a real one and
the counts on both sides must agree exactly.
"""
import re
from collections import Counter, deque
from urllib.parse import parse_qs

import gevent
import gevent.event
import orjson
import pytest
from click.testing import CliRunner
from gevent import pywsgi, socket

from fiberapp.loadgen.cli import bench
from fiberapp.loadgen.client import Closed, RequestTemplate
from fiberapp.loadgen.pipeline import PipelinedConnection
from fiberapp.loadgen.taxi import LoadgenError, Simulation, TaxiConfig, order_rate
from fiberapp.loadgen.worker import plan, run, split
from fiberapp.runtime.clock import FakeClock, SystemClock

ROUTES = [
    ("POST", re.compile(r"^/taxi/drivers/(\w+)/location$"), "location"),
    ("GET", re.compile(r"^/taxi/drivers/(\w+)/offer$"), "offer_poll"),
    ("POST", re.compile(r"^/taxi/drivers/(\w+)/offer/accept$"), "offer_accept"),
    ("POST", re.compile(r"^/taxi/drivers/(\w+)/offer/decline$"), "offer_decline"),
    ("POST", re.compile(r"^/taxi/orders$"), "order_create"),
    ("GET", re.compile(r"^/taxi/orders/(\d+)$"), "order_get"),
    ("POST", re.compile(r"^/taxi/orders/(\d+)/cancel$"), "order_cancel"),
    ("POST", re.compile(r"^/taxi/orders/(\d+)/arriving$"), "arriving"),
    ("POST", re.compile(r"^/taxi/orders/(\d+)/complete$"), "complete"),
    ("GET", re.compile(r"^/taxi/stats$"), "stats"),
]


class FakeTaxi:
    """Dispatches each order to the first parked (long-polling) driver, else queues it."""

    def __init__(self, clock, fail_every=0, offer_on_location=False):
        self.clock = clock
        self.fail_every = fail_every  # every n-th location ping answers 503
        # Like the taxi app, the location answer carries a pending offer (what drivers
        # sharing a connection rely on); they never park, so offers wait for a ping.
        self.offer_on_location = offer_on_location
        self.hits = Counter()
        self.statuses = Counter()  # non-2xx answers given, "http <status>"
        self.orders = {}
        self.pending = deque()
        self.parked = {}  # driver -> [event, offer]
        self.drivers_seen = set()
        self.peers = set()  # client ports: one per connection
        self.next_id = 1

    def park_count(self):
        return len(self.parked)

    def _offer(self, order_id, driver, slot=None):
        o = self.orders[order_id]
        o["state"], o["driver"] = "offered", driver
        offer = {"order_id": order_id, "from": o["from"], "to": o["to"]}
        if slot is not None:
            slot[1] = offer
            slot[0].set()
        return offer

    def _dispatch(self, order_id):
        for driver, slot in list(self.parked.items()):
            if driver not in self.orders[order_id]["declined"]:
                del self.parked[driver]  # un-parked the moment it is woken
                self._offer(order_id, driver, slot)
                return
        self.pending.append(order_id)

    def app(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        for m, rx, name in ROUTES:
            match = rx.match(path)
            if m == method and match:
                break
        else:
            name, match = None, None
        self.hits[name] += 1
        self.peers.add(environ["REMOTE_PORT"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = orjson.loads(environ["wsgi.input"].read(length)) if length else {}
        status, payload = getattr(self, f"do_{name}")(match.group(1) if match.groups() else None, body, environ) if name else (404, {})
        if not 200 <= status < 300:
            self.statuses[f"http {status}"] += 1
        data = b"" if status == 204 else orjson.dumps(payload)
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def do_location(self, driver, body, env):
        self.drivers_seen.add(int(driver))
        if self.fail_every and self.hits["location"] % self.fail_every == 0:
            return 503, {"error": "injected"}
        if self.offer_on_location:
            offered = [o for o in self.orders.values() if o["state"] == "offered" and o["driver"] == driver]
            if offered:
                return 200, {"ok": True, "offer": self._view(offered[0])}
            while self.pending:
                oid = self.pending.popleft()
                if self.orders[oid]["state"] == "created" and driver not in self.orders[oid]["declined"]:
                    return 200, {"ok": True, "offer": self._offer(oid, driver)}
                if self.orders[oid]["state"] == "created":
                    self.pending.append(oid)  # declined by this one: keep it for another
                    break
        return 200, {"ok": True}

    @staticmethod
    def _view(o):
        return {"order_id": o["id"], "from": o["from"], "to": o["to"]}

    def do_offer_poll(self, driver, body, env):
        timeout = float(parse_qs(env["QUERY_STRING"])["timeout"][0])
        while self.pending:
            oid = self.pending.popleft()
            if self.orders[oid]["state"] == "created":
                return 200, {"offer": self._offer(oid, driver)}
        slot = [gevent.event.Event(), None]
        self.parked[driver] = slot

        def expire():
            if self.parked.get(driver) is slot:
                del self.parked[driver]
                slot[0].set()

        timer = self.clock.call_later(timeout, expire)
        try:
            slot[0].wait()
        finally:
            timer.cancel()
            if self.parked.get(driver) is slot:  # the connection died while parked
                del self.parked[driver]
        return (200, {"offer": slot[1]}) if slot[1] else (204, None)

    def _mine(self, driver, body, state):
        o = self.orders.get(body.get("order_id"))
        if o is None or o["state"] != state or o["driver"] != driver:
            return None
        return o

    def do_offer_accept(self, driver, body, env):
        o = self._mine(driver, body, "offered")
        if o is None:
            return 409, {"error": "not offered to you"}
        o["state"], o["accepted_at"] = "accepted", self.clock.monotonic()
        return 200, {"order": {"id": o["id"], "state": o["state"]}}

    def do_offer_decline(self, driver, body, env):
        o = self._mine(driver, body, "offered")
        if o is None:
            return 409, {"error": "not offered to you"}
        o["state"], o["driver"] = "created", None
        o["declined"].add(driver)
        self._dispatch(o["id"])
        return 200, {"ok": True}

    def do_order_create(self, _, body, env):
        oid = self.next_id
        self.next_id += 1
        self.orders[oid] = {"id": oid, "state": "created", "driver": None, "from": body["from"], "to": body["to"],
                            "created_at": self.clock.monotonic(), "accepted_at": None, "declined": set()}
        self._dispatch(oid)
        return 201, {"order": {"id": oid, "state": self.orders[oid]["state"]}}

    def do_order_get(self, oid, body, env):
        o = self.orders.get(int(oid))
        if o is None:
            return 404, {"error": "no such order"}
        return 200, {"order": {"id": o["id"], "state": o["state"], "driver": o["driver"]}}

    def do_order_cancel(self, oid, body, env):
        o = self.orders.get(int(oid))
        if o is None or o["state"] in ("completed", "cancelled"):
            return 409, {"error": "finished"}
        o["state"], o["reason"] = "cancelled", body.get("reason")
        return 200, {"order": {"id": o["id"], "state": o["state"]}}

    def _driver_step(self, oid, body, src, dst):
        o = self.orders.get(int(oid))
        if o is None or o["state"] != src or o["driver"] != str(body.get("driver")):
            return 409, {"error": "wrong state"}
        o["state"] = dst
        return 200, {"order": {"id": o["id"], "state": dst}}

    def do_arriving(self, oid, body, env):
        return self._driver_step(oid, body, "accepted", "arriving")

    def do_complete(self, oid, body, env):
        return self._driver_step(oid, body, "arriving", "completed")

    def do_stats(self, _, body, env):
        return 200, {"orders": dict(Counter(o["state"] for o in self.orders.values())),
                     "drivers": {"online": len(self.drivers_seen), "free": len(self.parked)},
                     "dispatch_latency": {"p50": None, "p95": None, "p99": None}}


@pytest.fixture
def serve():
    servers = []

    def start(fake):
        server = pywsgi.WSGIServer(("127.0.0.1", 0), fake.app, log=None, error_log=None)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for s in servers:
        s.stop(timeout=1)


def run_virtual(clock, sim, fake, max_spins=500_000):
    """Run the simulation, jumping the FakeClock whenever nothing else can happen.

    Quiescent = every request the generator has in flight is parked in a long-poll on
    the fake server (so only a timer can move things on). max_spins bounds the loop
    passes between two jumps: a guard against a hang, not a timing assumption.
    """
    g = gevent.spawn(sim.run)
    spins = 0
    while not g.ready():
        gevent.idle()
        spins += 1
        assert spins < max_spins, (
            f"never quiescent: {sim.results.inflight} requests in flight, parked {sorted(fake.parked)}, "
            f"now {clock.monotonic()}, next timer {clock.next_deadline()}, hits {dict(fake.hits)}")
        if g.ready() or sim.results.inflight != fake.park_count():
            continue
        deadline = clock.next_deadline()
        if deadline is not None:
            clock.set(max(deadline, clock.monotonic()))
            spins = 0
    return g.get()


def test_counts_match_what_the_server_saw(serve):
    clock = FakeClock()
    fake = FakeTaxi(clock, fail_every=9)
    cfg = TaxiConfig(url=serve(fake), drivers=8, interval=0.25, orders=8, duration=3.0, accept=0.7,
                     ride_time=0.6, patience=0.8, client_poll=0.2, client_conns=4, seed=3)
    sim = Simulation(cfg, clock=clock)
    results = run_virtual(clock, sim, fake)
    rep = results.report()

    # Every endpoint: the server saw what the generator answered for or abandoned.
    for ep in ("location", "offer_poll", "offer_accept", "offer_decline", "order_create",
               "order_cancel", "arriving", "complete", "stats"):
        assert fake.hits[ep] == results.requests.get(ep, 0) + results.abandoned.get(ep, 0), ep
    assert fake.hits["order_get"] == results.requests.get("order_get", 0) + results.requests.get("final_check", 0)
    assert fake.hits[None] == 0
    # Errors by kind are exactly the non-2xx answers the server gave (incl. 503 injected).
    assert results.errors == dict(fake.statuses)
    assert fake.statuses["http 503"] >= 1
    # Orders by final state = the server's final states.
    assert rep["orders"] == dict(Counter(o["state"] for o in fake.orders.values()))
    # Dispatch latency: same orders, same virtual durations (both sides read the clock
    # at the response, and virtual time does not move during a round trip).
    server_lat = sorted(o["accepted_at"] - o["created_at"] for o in fake.orders.values() if o["accepted_at"])
    mine = sorted(r["accepted"] - r["created"] for r in results.orders.values() if r["accepted"] is not None)
    assert mine == pytest.approx(server_lat)
    assert rep["dispatch_latency"]["count"] == len(server_lat)
    # The scenario actually exercised the ride cycle.
    assert rep["orders"].get("completed", 0) >= 1 and fake.hits["offer_decline"] >= 1
    assert fake.drivers_seen == set(range(1, 9))
    # Keep-alive: one connection per driver plus the clients' pool (a reconnect after
    # an injected 503 is not needed: the server keeps the connection).
    assert len(fake.peers) <= 8 + 4
    assert rep["connects"]["count"] == len(fake.peers)  # every connection opened was used
    assert results.elapsed == pytest.approx(3.0)
    assert results.server_stats["orders"] == rep["orders"]
    assert rep["endpoints"]["location"]["requests"] == results.requests["location"]


def test_rush_hour_curve_averages_to_the_rate():
    cfg = TaxiConfig(orders=10, duration=100, rush=0.6)
    samples = [order_rate(cfg, t / 10) for t in range(1000)]
    assert sum(samples) / len(samples) == pytest.approx(10, rel=0.01)
    assert order_rate(cfg, 0) == pytest.approx(4) and order_rate(cfg, 50) == pytest.approx(16)


def test_counts_match_with_drivers_sharing_connections(serve):
    clock = FakeClock()
    fake = FakeTaxi(clock, fail_every=11, offer_on_location=True)
    cfg = TaxiConfig(url=serve(fake), drivers=12, per_conn=4, interval=0.25, orders=8, duration=3.0,
                     accept=0.7, ride_time=0.6, patience=0.8, client_poll=0.2, client_conns=2, seed=5)
    results = run_virtual(clock, Simulation(cfg, clock=clock), fake)
    rep = results.report()
    for ep in ("location", "offer_accept", "offer_decline", "order_create", "order_cancel", "arriving",
               "complete", "stats"):
        assert fake.hits[ep] == results.requests.get(ep, 0) + results.abandoned.get(ep, 0), ep
    assert fake.hits["offer_poll"] == 0  # no long-poll on a shared connection
    assert results.errors == dict(fake.statuses)
    assert rep["orders"] == dict(Counter(o["state"] for o in fake.orders.values()))
    assert rep["orders"].get("completed", 0) >= 1 and fake.hits["offer_decline"] >= 1
    assert fake.drivers_seen == set(range(1, 13))
    # 12 drivers on 3 connections, plus the clients' 2.
    assert len(fake.peers) <= 3 + 2
    # Each driver pings about once per period (0.25 s +-20 %) over the 3 s.
    assert 12 * 3.0 / 0.3 <= fake.hits["location"] <= 12 * 3.0 / 0.2 + 12
    # The loop-lag probe ran all along; on the FakeClock the loop is never late.
    assert rep["generator_lag"]["count"] >= 3.0 / 0.05 - 2
    assert rep["generator_lag"]["max"] == pytest.approx(0, abs=1e-9)


def test_drivers_on_a_shared_connection_pipeline_their_requests(serve):
    fake = FakeTaxi(SystemClock())
    sim = Simulation(TaxiConfig(url=serve(fake), drivers=0))
    conn = PipelinedConnection(sim.address, 5.0)
    pings = [RequestTemplate("POST", f"/taxi/drivers/{i}/location", sim.host).encode(b"{}") for i in range(1, 6)]
    calls = [gevent.spawn(sim.call, conn, "location", ping) for ping in pings]
    gevent.joinall(calls, raise_error=True)
    # Every answer reached its own request (in order), over one connection opened once.
    assert [c.value for c in calls] == [(200, b'{"ok":true}')] * 5
    assert fake.drivers_seen == {1, 2, 3, 4, 5} and len(fake.peers) == 1
    assert sim.results.requests["location"] == 5 and sim.results.connects.summary()["count"] == 1
    assert conn.pipelined == 4  # sent while the first was still unanswered
    # The server closes it: the next request reconnects.
    conn.close()
    assert sim.call(conn, "location", pings[0]) == (200, b'{"ok":true}')
    assert sim.results.connects.summary()["count"] == 2
    conn.close()


def test_a_failed_pipelined_connection_fails_every_request_on_it():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def hang_up_after_reading():
        peer, _ = listener.accept()
        peer.recv(65536)
        peer.close()

    server = gevent.spawn(hang_up_after_reading)
    conn = PipelinedConnection(listener.getsockname(), 5.0)
    calls = [gevent.spawn(conn.request, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(3)]
    gevent.joinall(calls + [server])
    assert all(isinstance(c.exception, Closed) for c in calls), [c.exception for c in calls]
    assert not conn.connected
    listener.close()


def test_plan_shares_connections_past_the_open_files_limit():
    # 20,000 drivers do not fit one process (nor the server, on the same machine):
    # drivers share connections, in one process.
    n, per_conn, note = plan(TaxiConfig(drivers=20_000, client_conns=32), fd_limit=20_000)
    assert (n, per_conn) == (1, 20) and "20 drivers per keep-alive connection (1000 connections" in note
    assert "one process" in note
    # What fits keeps one connection (and a long-poll) per driver.
    n, per_conn, note = plan(TaxiConfig(drivers=19_000, client_conns=32), fd_limit=20_000)
    assert (n, per_conn) == (1, 1) and "one keep-alive connection per driver" in note
    assert plan(TaxiConfig(drivers=20_000, per_conn=50), fd_limit=20_000)[:2] == (1, 50)


def test_plan_spreads_connections_over_processes():
    cfg = TaxiConfig(drivers=20_000, client_conns=32, per_conn=1)
    n, per_conn, note = plan(cfg, fd_limit=20_000)
    assert n == 2 and per_conn == 1 and "2 processes" in note
    parts = split(cfg, n)
    assert [p.first_driver for p in parts] == [1, 10_001]
    assert sum(p.drivers for p in parts) == 20_000 and sum(p.share for p in parts) == pytest.approx(1)
    assert plan(TaxiConfig(drivers=100), fd_limit=20_000)[0] == 1
    assert plan(TaxiConfig(drivers=100, processes=3), fd_limit=20_000)[0] == 3


def test_two_worker_processes_merge(serve):
    fake = FakeTaxi(SystemClock())
    cfg = TaxiConfig(url=serve(fake), drivers=6, interval=0.2, orders=10, duration=1.0, ride_time=0.3,
                     patience=0.5, client_poll=0.1, client_conns=2, processes=2)
    results = run(cfg)
    rep = results.report()
    assert fake.drivers_seen == set(range(1, 7))  # both id ranges were driven
    assert any("2 processes" in n for n in results.notes)
    created = {oid for oid, r in results.orders.items() if r["created"] is not None}
    assert created and created <= {str(i) for i in fake.orders}
    # The final check ran after every driver stopped, so the states agree, except that a
    # state-changing request abandoned at the stop may reach the server after the check
    # read that order (real processes, real time): at most one order each.
    late = sum(results.abandoned.get(ep, 0) for ep in ("offer_accept", "offer_decline", "arriving",
                                                        "complete", "order_cancel"))
    differ = [oid for oid in created if results.orders[oid]["state"] != fake.orders[int(oid)]["state"]]
    assert len(differ) <= late, (differ, late)
    assert sum(rep["orders"].values()) == len(created)


def test_cli_json_report(serve):
    fake = FakeTaxi(SystemClock())
    url = serve(fake)
    out = CliRunner().invoke(bench, ["taxi", "--url", url, "--drivers", "3", "--interval", "0.1", "--orders", "5",
                                     "--duration", "0.5", "--json", "--quiet"])
    assert out.exit_code == 0, out.output
    rep = orjson.loads(out.output)
    assert rep["config"]["drivers"] == 3
    assert rep["endpoints"]["location"]["requests"] >= 3
    assert set(rep) >= {"rps", "endpoints", "dispatch_latency", "orders", "errors", "server_stats"}
    assert rep["requests"] == sum(e["requests"] for e in rep["endpoints"].values())


def test_cli_unreachable_server_reports_connect_errors():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    out = CliRunner().invoke(bench, ["taxi", "--url", f"http://127.0.0.1:{port}", "--drivers", "2",
                                     "--interval", "0.1", "--orders", "0", "--duration", "0.3", "--quiet"])
    assert out.exit_code == 1
    assert "connect" in out.output


@pytest.mark.parametrize("args", [["--url", "https://x"], ["--url", "ftp://x"], ["--drivers", "-1"], ["--rush", "1"]])
def test_cli_rejects_bad_options(args):
    out = CliRunner().invoke(bench, ["taxi", *args, "--duration", "0.1", "--quiet"])
    assert out.exit_code == 2, out.output


def test_config_check_names_every_problem():
    with pytest.raises(LoadgenError) as info:
        TaxiConfig(drivers=-1, accept=2, url="https://x").check()
    assert "--drivers" in str(info.value) and "--accept" in str(info.value) and "--url" in str(info.value)
