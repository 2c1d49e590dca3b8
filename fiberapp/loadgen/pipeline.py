"""A keep-alive connection shared by several fibers, with HTTP/1.1 pipelining.

Why: one connection per simulated driver does not fit the open-files limit at 20,000
drivers (on this machine the server, one process, has the same 20,000 limit as the
generator). So drivers share connections. Taking turns (one request in flight per
connection) made each connection a queue served at one round trip per request: at 20
drivers per connection, any stall longer than a quarter of a second made its queue
grow faster than it drained (waits of 2-6 s against nginx on a busy machine). With
pipelining every fiber sends at once and the answers come back in the order the
requests were sent (RFC 9112 section 9.3.2); fiberapp's server answers pipelined
requests in order, as every HTTP/1.1 server must. A request's latency is then the
server's: from its send to its answer, including what the server had to answer first
on that connection.

One reader fiber per connection parses answers (httptools) and hands each to the
oldest waiting request. A failure (EOF, reset, an unparsable answer, or one request's
timeout, after which the connection's state is unknown) closes the connection and fails
every request still waiting on it; the next request reconnects. A request sent on a
connection the server closed while idle is not retried here (its send or answer fails
with Closed): with several requests in flight a retry could reorder them.
"""
import collections

import gevent
import gevent.event
import httptools
from gevent import socket
from gevent.lock import Semaphore

from fiberapp.loadgen.client import _RECV, Closed, ConnectFailed, Protocol, Timeout


class PipelinedConnection:
    """Several fibers may call ``request`` at once; see the module docstring."""

    __slots__ = ("address", "timeout", "pipelined", "_sock", "_parser", "_pending", "_send_lock",
                 "_connecting", "_connect_error", "_buf", "_body", "_status", "_keep", "_reader")

    def __init__(self, address, timeout=10.0, buf=None):
        self.address = address
        self.timeout = timeout
        self.pipelined = 0  # requests sent while an earlier one on this connection was unanswered
        self._sock = None
        self._parser = None
        self._pending = collections.deque()  # AsyncResult per request sent and not answered, in order
        self._send_lock = Semaphore()  # keeps two sendalls from interleaving (FIFO)
        self._connecting = None  # Event while one fiber connects for all
        self._connect_error = None
        # Shared receive buffer: safe because a recv into it is followed by feed_data
        # (which copies what it keeps) with no yield in between (see client.Connection).
        self._buf = bytearray(_RECV) if buf is None else buf
        self._body = []
        self._status = 0
        self._keep = True
        self._reader = None

    @property
    def connected(self):
        return self._sock is not None

    def connect(self):
        """Open the connection; returns False when another fiber opened it meanwhile."""
        if self._sock is not None:
            return False
        if self._connecting is not None:
            done = self._connecting
            done.wait(self.timeout)
            if self._sock is None:
                raise self._connect_error or Closed("connection error: closed before this request was sent")
            return False
        done = self._connecting = gevent.event.Event()
        self._connect_error = None  # what the connecting fiber got, for those who waited on it
        try:
            try:
                sock = socket.create_connection(self.address, timeout=self.timeout)
            except socket.timeout:
                self._connect_error = Timeout(f"connect to {self.address[0]}:{self.address[1]} timed out")
                raise self._connect_error from None
            except OSError as e:
                self._connect_error = ConnectFailed(f"connect to {self.address[0]}:{self.address[1]}: {e.strerror or e}")
                raise self._connect_error from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)  # the reader waits for as long as requests are pending
            self._sock = sock
            self._parser = httptools.HttpResponseParser(self)
            self._body = []
            self._reader = gevent.spawn(self._read, sock, self._parser)
        finally:
            self._connecting = None
            done.set()
        return True

    def close(self):
        if self._sock is not None:
            self._fail(self._sock, Closed("closed by the client"))
        if self._reader is not None:
            self._reader.kill(block=False)
            self._reader = None

    def request(self, data, timeout=None):
        """Send pre-encoded ``data`` behind whatever is in flight; returns (status, body)."""
        if self._sock is None:
            self.connect()
        sock = self._sock
        slot = gevent.event.AsyncResult()
        with self._send_lock:
            if self._sock is not sock or sock is None:
                raise Closed("connection error: closed while waiting to send")
            if self._pending:
                self.pipelined += 1
            self._pending.append(slot)
            try:
                # The raw non-blocking send first: gevent's sendall costs a getsockopt and
                # a few Python layers per call (profiled), and a small request fits the
                # socket buffer; what does not is sent by sendall, still under the lock.
                try:
                    sent = sock._sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    sock.sendall(data[sent:])
            except OSError as e:
                self._fail(sock, Closed(f"connection error: {e.strerror or e}"))
        try:
            return slot.get(timeout=self.timeout if timeout is None else timeout)
        except gevent.Timeout:
            # Its answer may still come, but in order behind nothing we can tell apart:
            # the connection's state is unknown, so it goes, with everything on it.
            self._fail(sock, Timeout("no response in time (another request on the connection timed out)"))
            raise Timeout("no response in time") from None

    # -- the reader fiber and httptools callbacks -----------------------------------------------

    def _read(self, sock, parser):
        buf = self._buf
        # The raw socket, waiting on its read watcher only when it has nothing (as the
        # server's connection loop does): gevent's recv_into wrapper per read showed in
        # the profile. Closing the gevent socket wakes this wait with an error.
        raw_recv_into, read_event, wait = sock._sock.recv_into, sock._read_event, gevent.get_hub().wait
        try:
            while True:
                try:
                    n = raw_recv_into(buf)
                except BlockingIOError:
                    wait(read_event)
                    continue
                if not n:
                    raise Closed("closed by the server")
                parser.feed_data(memoryview(buf)[:n])
                if not self._keep and self._sock is sock:
                    raise Closed("closed by the server (Connection: close)")
        except Closed as e:
            self._fail(sock, e)
        except httptools.HttpParserError as e:
            self._fail(sock, Protocol(f"bad response: {e}"))
        except OSError as e:
            self._fail(sock, Closed(f"connection error: {e.strerror or e}"))

    def on_headers_complete(self):
        self._status = self._parser.get_status_code()
        self._keep = self._parser.should_keep_alive()

    def on_body(self, data):
        self._body.append(data)

    def on_message_complete(self):
        body = self._body
        self._body = []
        if not self._pending:
            raise Closed("an answer nobody asked for")  # ends feed_data; the reader fails the connection
        self._pending.popleft().set((self._status, body[0] if len(body) == 1 else b"".join(body)))

    def _fail(self, sock, exc):
        """Close ``sock`` (if still this connection's) and fail every request waiting on it."""
        if self._sock is not sock:
            return
        self._sock = None
        self._parser = None
        self._keep = True
        pending, self._pending = self._pending, collections.deque()
        for slot in pending:
            slot.set_exception(exc)
        try:
            sock.close()
        except OSError:
            pass
