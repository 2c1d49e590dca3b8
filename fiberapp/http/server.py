"""HTTPServer: gevent StreamServer + httptools, one fiber per connection from a bounded pool.

    router = Router()
    server = HTTPServer(router, "127.0.0.1", 0, config=HTTPConfig(idle_timeout=5))
    server.start()            # bound and accepting when this returns
    host, port = server.address
    ...
    server.stop(timeout=5)    # graceful: see stop()

``app`` is anything callable as app(request) -> Response (a Router is). Lifecycle:
start() binds (port 0 picks a free port) and starts accepting; stop(timeout) stops
accepting, closes idle keep-alive connections at once, lets in-flight requests finish
(their responses carry Connection: close) until the deadline, then kills what is left.
All timeouts, including stop's, are measured on the clock passed in.
"""
import logging
import socket as _socket
import time as _time
from email.utils import formatdate

import gevent.event
from gevent.pool import Pool
from gevent.server import StreamServer

from fiberapp.runtime.clock import SystemClock

from .config import HTTPConfig
from .connection import Connection
from .metrics import HTTPMetrics
from .response import to_response

log = logging.getLogger("fiberapp.http")

RECV_BUFFER = 64 * 1024


class HTTPServer:
    def __init__(self, app, host="127.0.0.1", port=0, *, config=None, clock=None, registry=None,
                 runtime=None, name="http", **knobs):
        if config is None:
            config = HTTPConfig(**knobs)
        elif knobs:
            raise TypeError("pass either config= or individual settings, not both")
        dispatch = getattr(app, "dispatch", None)
        if dispatch is None and not callable(app):
            raise TypeError(f"app must be a Router or a callable(request) -> value, got {app!r}")
        self.app = dispatch if dispatch is not None else as_app(app)
        self.host, self.port = host, port
        self.config = config
        self.clock = clock if clock is not None else SystemClock()
        # The hot path reads the time through this: time.monotonic itself (a C call) when
        # the clock is the real one, not a Python method that calls it.
        self.monotonic = _time.monotonic if type(self.clock) is SystemClock else self.clock.monotonic
        self.name = name
        self.runtime = runtime  # when given, connection fibers are the runtime's named Fibers
        self.metrics = HTTPMetrics(registry, clock=self.clock) if registry is not None else None
        self.access_log = logging.getLogger("fiberapp.http.access") if config.access_log else None
        # The Date header line; refreshed by a timer every second rather than per request.
        self.date_line = b""
        self._date_timer = None
        # Shared by every connection: see connection.py for why that is safe.
        self.buffer = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buffer)
        self.stopping = False
        self.address = None
        self._connections = set()
        self._pool = None
        self._server = None
        self._drained = None
        self._tick_date()

    def _tick_date(self):
        now = self.clock.time()
        self.date_line = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        if self._server is not None and not self.stopping:
            self._date_timer = self.clock.call_later(1.0 - (now % 1.0), self._tick_date)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self):
        if self._server is not None:
            raise RuntimeError("server already started")
        listener = _socket.socket(_socket.AF_INET6 if ":" in self.host else _socket.AF_INET, _socket.SOCK_STREAM)
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(self.config.backlog)
        listener.setblocking(False)
        if self.runtime is not None:
            self._pool = _FiberPool(self.config.max_connections, self.runtime, f"{self.name}.conn")
        else:
            self._pool = Pool(self.config.max_connections)
        self._server = StreamServer(listener, self._handle, spawn=self._pool)
        # Accept everything pending when the listener is readable, not gevent's 100: under
        # load a loop iteration serves every busy connection before it gets back to the
        # listener, so 1,000 clients arriving at once waited up to ten iterations (seconds)
        # for their first request to be read (the p99 at 1,000 connections).
        self._server.max_accept = max(self._server.max_accept, self.config.backlog)
        self._server.start()
        self._tick_date()
        self.address = listener.getsockname()[:2]
        log.info("%s: listening on %s:%d", self.name, *self.address)
        return self.address

    def stop(self, timeout=5.0):
        """Stop accepting, close idle connections, drain in-flight requests, kill the rest."""
        if self._server is None or self.stopping:
            return
        self.stopping = True
        if self._date_timer is not None:
            self._date_timer.cancel()
        self._server.close()  # stops accepting; running connections are ours to finish
        if self._connections and timeout > 0:
            self._drained = gevent.event.Event()
            timer = self.clock.call_later(timeout, self._drained.set)
            for conn in list(self._connections):
                conn.close_if_idle()
            try:
                self._drained.wait()
            finally:
                timer.cancel()
        if self._connections:
            log.warning("%s: %d connection(s) still busy after %.1fs, killing them",
                        self.name, len(self._connections), timeout)
        self._pool.kill(block=True, timeout=1.0)
        for conn in list(self._connections):
            conn.close()
        self._connections.clear()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stats(self):
        """Point-in-time counters for the console and tests."""
        pool = self._pool
        states = {"idle": 0, "headers": 0, "body": 0, "handler": 0, "sending": 0, "closed": 0}
        for conn in self._connections:
            states[conn.state] += 1
        return {
            "connections": len(self._connections),
            "states": states,
            "accepting": bool(self._server is not None and not self.stopping and pool is not None and not pool.full()),
            "max_connections": self.config.max_connections,
        }

    # -- per connection ------------------------------------------------------------------
    def _handle(self, sock, addr):
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (unix socket) or already gone
        conn = Connection(self, sock, addr)
        self._connections.add(conn)
        try:
            conn.serve()
        except Exception:
            # A bug in this package, never the client's doing; the connection dies alone.
            log.exception("%s: connection from %s failed", self.name, addr)
        finally:
            conn.close()
            self._connections.discard(conn)
            if self._drained is not None and not self._connections:
                self._drained.set()


class _FiberPool(Pool):
    """The bounded connection pool, with runtime Fibers as members (named, listed by the
    runtime, CPU-accounted) instead of anonymous greenlets."""

    def __init__(self, size, runtime, fiber_name):
        super().__init__(size)
        self._runtime = runtime
        self._fiber_name = fiber_name

    def spawn(self, fn, *args, **kwargs):
        # StreamServer only spawns when the pool is not full, so add() never blocks here,
        # and the fiber cannot run (let alone finish) before it is tracked.
        fiber = self._runtime.spawn(fn, *args, name=self._fiber_name, **kwargs)
        self.add(fiber)
        return fiber


def as_app(fn):
    """Wrap a plain function(request) -> value as an app (no routing)."""
    def app(request):
        return to_response(fn(request))
    return app
