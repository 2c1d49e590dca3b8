"""The taxi simulation: drivers, clients and a rush-hour stream of orders.

One Simulation runs in one process, on one gevent hub, with one fiber per driver and
one fiber per order's client (sharing a small pool of connections). All waiting goes
through the clock passed in, so a test can run it on a FakeClock against a fake server;
sockets are real.

A driver, while free, POSTs its location once per period P (the ping interval with a
per-driver jitter of +-20 %). With a connection of its own (``per_conn`` 1), it then
long-polls GET .../offer?timeout=P, so the long-poll doubles as the wait between pings;
if the server answers the poll early with 204 the driver waits out the rest of P. When
``per_conn`` K > 1, K drivers share one keep-alive connection and pipeline their
requests on it (pipeline.py); such a driver cannot park a long-poll there (everything
behind it would wait), so it reads its offer from the location answer, which carries
the offer presented to it, if any. Offers then wait for the next ping (up to P).
On an offer it accepts with probability ``accept`` (else declines); after accepting it
drives to the pickup, pinging "busy" every interval, POSTs arriving, drives to the
destination, POSTs complete, and is free again. Positions move along straight random
routes at ~10 m/s.

A client POSTs an order, polls it every ``client_poll`` seconds until a driver has
accepted it, and cancels it if that has not happened within its patience.

Orders arrive as a Poisson stream whose rate follows a rush-hour curve over the run:
rate(t) = R * (1 + rush * cos(2 pi (t/duration - 1/2))), so R is the average, the rate
starts and ends at (1 - rush) R and peaks at (1 + rush) R mid-run.

At the end the fibers are stopped (requests still waiting are counted as abandoned),
each order this process created is read back once (endpoint "final_check") for its
final state, and /taxi/stats is fetched for the server's own view.
"""
import gc
import math
import random
from urllib.parse import urlsplit

import gevent
import gevent.pool
import gevent.queue
import orjson
from gevent import socket

from fiberapp.loadgen.client import ClientError, Connection, RequestTemplate
from fiberapp.loadgen.pipeline import PipelinedConnection
from fiberapp.loadgen.config import LoadgenError, TaxiConfig, order_rate  # noqa: F401 (re-exported)
from fiberapp.loadgen.results import LAG_PROBE, Results
from fiberapp.runtime.clock import SystemClock

_M_PER_DEG = 111_195.0
SPEED_MPS = 10.0
ACCEPTED_STATES = ("accepted", "arriving", "completed")
FINAL_STATES = ("completed", "cancelled")


class ConnectionPool:
    """Keep-alive connections shared by client fibers (LIFO: warm ones first)."""

    def __init__(self, address, size, timeout, buf):
        self._q = gevent.queue.LifoQueue()
        self._all = [Connection(address, timeout, buf) for _ in range(size)]
        for conn in self._all:
            self._q.put(conn)

    def get(self):
        return self._q.get()

    def put(self, conn):
        self._q.put(conn)

    def close(self):
        for conn in self._all:
            conn.close()


class Simulation:
    def __init__(self, cfg, clock=None, results=None):
        self.cfg = cfg.check()
        self.clock = clock or SystemClock()
        self.results = results or Results()
        self.rng = random.Random(cfg.seed * 7919 + cfg.worker)
        parts = urlsplit(cfg.url)
        port = parts.port or 80
        self.host = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
        self.prefix = parts.path.rstrip("/")
        try:
            info = socket.getaddrinfo(parts.hostname, port, 0, socket.SOCK_STREAM)
        except OSError as e:
            raise LoadgenError(f"cannot resolve {parts.hostname}: {e}") from None
        self.address = info[0][4][:2]
        self._buf = bytearray(65536)  # shared by every connection: see Connection
        self._conns = []
        self.started = None
        self.running = False
        self._clients = 0
        t = lambda method, path: RequestTemplate(method, self.prefix + path, self.host)  # noqa: E731
        self._t_create = t("POST", "/taxi/orders")
        self._t_stats = t("GET", "/taxi/stats").encode()
        self._t = t

    # -- plumbing --------------------------------------------------------------

    def call(self, conn, ep, data, timeout=None):
        """One request; returns (status, body) or (None, None) after a transport error."""
        res = self.results
        clock = self.clock
        res.inflight += 1
        try:
            if not conn.connected:
                # Timed apart: a SYN dropped by a full accept queue costs 1 s, 3 s, 7 s...
                # and belongs to the server's listen backlog, not to the endpoint.
                # (False: another fiber sharing the connection opened it meanwhile.)
                t0 = clock.monotonic()
                if conn.connect() is not False:
                    res.connected(clock.monotonic() - t0)
            t0 = clock.monotonic()
            status, body = conn.request(data, timeout)
        except ClientError as e:
            res.failure(ep, e.kind)
            return None, None
        except BaseException:
            res.abandon(ep)  # killed at the end of the run while waiting
            raise
        finally:
            res.inflight -= 1
        res.response(ep, status, clock.monotonic() - t0)
        return status, body

    def _json(self, ep, body, *keys):
        try:
            value = orjson.loads(body)
            for key in keys:
                value = value[key]
            return value
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            self.results.failure(ep, "bad body")
            return None

    def _point(self):
        cfg, rng = self.cfg, self.rng
        return (cfg.center_lat + rng.uniform(-1, 1) * cfg.radius_deg,
                cfg.center_lon + rng.uniform(-1, 1) * cfg.radius_deg * 1.8)

    @staticmethod
    def _move(pos, target, seconds):
        """Move from pos toward target at SPEED_MPS; returns (new pos, arrived)."""
        dlat, dlon = target[0] - pos[0], target[1] - pos[1]
        dist = math.hypot(dlat, dlon * math.cos(math.radians(pos[0]))) * _M_PER_DEG
        step = SPEED_MPS * seconds
        if dist <= step or dist == 0:
            return target, True
        f = step / dist
        return (pos[0] + dlat * f, pos[1] + dlon * f), False

    def _jitter(self, base):
        return base * self.rng.uniform(0.8, 1.2)

    # -- drivers -----------------------------------------------------------------

    def _lag_probe(self):
        """How late this process's loop runs: a sleep that overshoots is CPU the generator
        did not get (or a fiber holding the loop), and it delays every answer it reads."""
        clock, lag = self.clock, self.results.lag
        while True:
            t0 = clock.monotonic()
            clock.sleep(LAG_PROBE)
            lag.record(max(0.0, clock.monotonic() - t0 - LAG_PROBE))

    def _starter(self, shared, per_conn):
        """Start each driver at its own moment, spread uniformly over the ramp (default:
        one interval). Spawning all of them at once and letting each sleep a random time
        ran every driver's set-up in one loop pass (about 1 s for 20,000) and then fired
        the pings that had come due meanwhile in one burst, which the server answered in
        about a second: a p99 of 1.2 s made by the generator."""
        cfg, clock, rng = self.cfg, self.clock, self.rng
        ramp = cfg.ramp or cfg.interval
        starts = sorted((rng.uniform(0, ramp), i) for i in range(cfg.drivers))
        spawn = self._group.spawn
        # Drivers join shared connections in the order they start, so connections open
        # one after another over the ramp too (a burst of connects overflows the server's
        # accept queue; a dropped handshake costs 1 s and more).
        for rank, (at, i) in enumerate(starts):
            rest = self.started + at - clock.monotonic()
            if rest > 0:
                clock.sleep(rest)
            spawn(self._driver, self.cfg.first_driver + i, None if shared is None else shared[rank // per_conn])

    def _driver(self, driver_id, conn=None):
        """One driver. ``conn`` None: its own connection, offers by long-poll; else a
        connection shared with other drivers, offers from the location answers."""
        cfg, clock, rng = self.cfg, self.clock, self.rng
        shared = conn is not None
        if not shared:
            conn = Connection(self.address, cfg.timeout, self._buf)
            self._conns.append(conn)
        t = self._t
        base = f"/taxi/drivers/{driver_id}"
        loc = t("POST", base + "/location")
        period = round(self._jitter(cfg.interval), 3)  # this driver's ping period
        poll = None if shared else t("GET", f"{base}/offer?timeout={period:g}").encode()
        pos, target = self._point(), self._point()
        last = due = clock.monotonic()
        while True:
            now = clock.monotonic()
            pos, arrived = self._move(pos, target, now - last)
            last = now
            if arrived:
                target = self._point()
            body = orjson.dumps({"lat": pos[0], "lon": pos[1], "status": "free"})
            status, resp = self.call(conn, "location", loc.encode(body))
            if status is None or not 200 <= status < 300:
                clock.sleep(self._jitter(cfg.interval))  # back off, do not hammer
                due = clock.monotonic()
                continue
            if shared:
                if b'"offer"' in resp:
                    offer = self._json("location", resp, "offer")
                    if isinstance(offer, dict):
                        pos, last = self._on_offer(conn, driver_id, loc, offer, pos, last)
                        due = clock.monotonic()
                        continue
                # A fixed period from the previous ping, not from its answer; after a
                # stall, at most one ping is made up for.
                due = max(due + period, clock.monotonic() - period)
                rest = due - clock.monotonic()
                if rest > 0:
                    clock.sleep(rest)
                continue
            t0 = clock.monotonic()
            status, resp = self.call(conn, "offer_poll", poll, timeout=period + cfg.timeout)
            if status == 200:
                offer = self._json("offer_poll", resp, "offer")
                if isinstance(offer, dict):
                    pos, last = self._on_offer(conn, driver_id, loc, offer, pos, last)
                continue
            rest = period - (clock.monotonic() - t0)
            if rest > 0:
                clock.sleep(rest)

    def _on_offer(self, conn, driver_id, loc, offer, pos, last):
        """Accept (and drive) or decline an offer; returns (position, when)."""
        cfg, clock = self.cfg, self.clock
        oid = offer.get("order_id")
        if oid is None:
            return pos, last
        t = self._t
        base = f"/taxi/drivers/{driver_id}"
        payload = orjson.dumps({"order_id": oid})
        if self.rng.random() < cfg.accept:
            status, _ = self.call(conn, "offer_accept", t("POST", base + "/offer/accept").encode(payload))
            if status is not None and 200 <= status < 300:
                self.results.order_accepted(oid, clock.monotonic())
                return self._ride(conn, driver_id, loc, oid, offer, pos)
        else:
            self.call(conn, "offer_decline", t("POST", base + "/offer/decline").encode(payload))
        return pos, last

    def _ride(self, conn, driver_id, loc, oid, offer, pos):
        cfg, rng = self.cfg, self.rng
        pickup = _latlon(offer.get("from")) or self._point()
        dropoff = _latlon(offer.get("to")) or self._point()
        payload = orjson.dumps({"driver": driver_id})
        for target, seconds, ep in ((pickup, cfg.ride_time * rng.uniform(0.2, 0.5), "arriving"),
                                    (dropoff, cfg.ride_time * rng.uniform(0.5, 1.5), "complete")):
            pos = self._busy_leg(conn, loc, pos, target, seconds)
            status, _ = self.call(conn, ep, self._t("POST", f"/taxi/orders/{oid}/{ep}").encode(payload))
            if status is None or not 200 <= status < 300:
                break  # cancelled meanwhile, or the server lost it: free again
        return pos, self.clock.monotonic()

    def _busy_leg(self, conn, loc, pos, target, seconds):
        """Drive toward target for ``seconds``, pinging "busy" every interval."""
        clock = self.clock
        start = clock.monotonic()
        end = start + seconds
        origin = pos
        while True:
            now = clock.monotonic()
            if now >= end:
                return target
            clock.sleep(min(self._jitter(self.cfg.interval), end - now))
            now = clock.monotonic()
            # Straight line, reaching the target exactly when the leg ends.
            f = min(1.0, (now - start) / seconds)
            pos = (origin[0] + (target[0] - origin[0]) * f, origin[1] + (target[1] - origin[1]) * f)
            if now < end:
                body = orjson.dumps({"lat": pos[0], "lon": pos[1], "status": "busy"})
                self.call(conn, "location", loc.encode(body))
        return pos  # pragma: no cover

    # -- clients -----------------------------------------------------------------

    def _client(self, n):
        cfg, clock, rng = self.cfg, self.clock, self.rng
        pickup, dropoff = self._point(), self._point()
        body = orjson.dumps({
            "client": f"c{cfg.worker}-{n}",
            "from": {"lat": pickup[0], "lon": pickup[1]},
            "to": {"lat": dropoff[0], "lon": dropoff[1]},
        })
        status, resp = self._pooled("order_create", self._t_create.encode(body))
        if status is None or not 200 <= status < 300:
            return
        oid = self._json("order_create", resp, "order", "id")
        if oid is None:
            return
        created = clock.monotonic()
        self.results.order_created(oid, created)
        give_up = created + self._jitter(cfg.patience)
        get = self._t("GET", f"/taxi/orders/{oid}").encode()
        while True:
            clock.sleep(self._jitter(cfg.client_poll))
            status, resp = self._pooled("order_get", get)
            state = self._json("order_get", resp, "order", "state") if status == 200 else None
            if state is not None:
                self.results.order_state(oid, state)
                if state in ACCEPTED_STATES or state in FINAL_STATES:
                    return
            if clock.monotonic() >= give_up:
                cancel = self._t("POST", f"/taxi/orders/{oid}/cancel")
                self._pooled("order_cancel", cancel.encode(b'{"reason":"client gave up waiting"}'))
                return

    def _pooled(self, ep, data):
        conn = self._pool.get()
        try:
            return self.call(conn, ep, data)
        finally:
            self._pool.put(conn)

    def _arrivals(self):
        cfg, clock, rng = self.cfg, self.clock, self.rng
        if cfg.orders <= 0:
            return
        spawn = self._group.spawn
        while True:
            elapsed = clock.monotonic() - self.started
            clock.sleep(rng.expovariate(order_rate(cfg, elapsed)))
            if clock.monotonic() - self.started >= cfg.duration:
                return
            self._clients += 1
            spawn(self._client, self._clients)

    # -- the run -------------------------------------------------------------------

    def progress(self):
        r = self.results
        return {
            "elapsed": (self.clock.monotonic() - self.started) if self.started is not None else 0.0,
            "requests": r.total_requests(), "errors": r.total_errors(), "orders": self._clients,
        }

    def run(self):
        """Run for cfg.duration, then stop, sweep and return the Results."""
        self.load()
        return self.finish()

    def load(self):
        """The load phase: every fiber runs for cfg.duration, then all are stopped
        (requests still waiting are counted as abandoned) and driver connections closed."""
        cfg, clock = self.cfg, self.clock
        self._group = gevent.pool.Group()
        self._pool = ConnectionPool(self.address, cfg.client_conns, cfg.timeout, self._buf)
        per_conn = max(1, cfg.per_conn)
        shared = None
        if per_conn > 1:
            shared = [PipelinedConnection(self.address, cfg.timeout, self._buf)
                      for _ in range(math.ceil(cfg.drivers / per_conn))]
            self._conns.extend(shared)
        # The cyclic collector's full passes over ~20,000 fibers stopped this process for
        # 0.4-0.5 s at a time, which showed up as server latency. A run creates little
        # cyclic garbage, so the collector is off while the load runs.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        self.started = clock.monotonic()
        self.running = True
        try:
            self._group.spawn(self._starter, shared, per_conn)
            self._group.spawn(self._lag_probe)
            self._group.spawn(self._arrivals)
            clock.sleep(cfg.duration)
            self.results.elapsed = clock.monotonic() - self.started
        finally:
            self.running = False
            self._group.kill(block=True)
            for conn in self._conns:
                conn.close()
            if shared:
                self.results.pipelined += sum(conn.pipelined for conn in shared)
            if gc_was_enabled:
                gc.enable()

    def finish(self):
        """After load() (and, with several processes, after every process's load()):
        read back the final state of this process's orders and the server's stats."""
        try:
            self._final_sweep()
            if self.cfg.worker == 0:
                status, body = self._pooled("stats", self._t_stats)
                if status == 200:
                    self.results.server_stats = self._json("stats", body)
        finally:
            self._pool.close()
        return self.results

    def _final_sweep(self):
        """Read back the state of every order this process created and saw unfinished."""
        pending = [oid for oid, rec in self.results.orders.items()
                   if rec["created"] is not None and rec["state"] not in FINAL_STATES]
        it = iter(pending)

        def reader():
            for oid in it:
                status, resp = self._pooled("final_check", self._t("GET", f"/taxi/orders/{oid}").encode())
                state = self._json("final_check", resp, "order", "state") if status == 200 else None
                self.results.order_state(oid, state or "unknown")

        readers = [gevent.spawn(reader) for _ in range(min(len(pending), self.cfg.client_conns))]
        gevent.joinall(readers, raise_error=True)


def _latlon(point):
    try:
        return float(point["lat"]), float(point["lon"])
    except (TypeError, KeyError, ValueError):
        return None
