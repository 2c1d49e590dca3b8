"""TCP for fiber scripts that speak their own protocols: a server, a client, framing.

    server = TcpServer(handle, "127.0.0.1", 7000, runtime=app.runtime, max_connections=100)
    server.start()                 # binds now: server.address is the real (host, port)
    ...
    server.stop(timeout=5)         # stop accepting, let handlers finish, then cancel them

    def handle(stream):            # one fiber per connection, named "<server>:<peer>"
        while (line := stream.read_line()) is not None:
            stream.write_line(line.upper())

    stream = connect("127.0.0.1", 7000, connect_timeout=2, read_timeout=5)
    stream.write_frame(b"payload"); reply = stream.read_frame()

Framing: lines (terminated by \\n, a trailing \\r is dropped) and length-prefixed frames (a
4-byte big-endian length, then the payload). Both are bounded (max_line, max_frame): a
peer cannot make us buffer without limit; an oversized line or frame raises FrameTooLarge.

Contracts:
- Every read waits at most read_timeout (NetTimeout), every connect connect_timeout.
- A clean end of stream between messages reads as None; in the middle of a message it
  raises ConnectionClosed: a truncated message is never returned as if whole.
- The server accepts at most max_connections at once: while full it stops accepting
  (new peers wait in the kernel's backlog), which is backpressure, not an error.
- A handler that raises is logged and its connection closed; the server goes on.
- After FrameTooLarge or NetTimeout the stream's position in the protocol is unknown:
  close it (a handler that lets the error escape gets its connection closed for it).
"""
import logging
import socket
import struct
import weakref
from time import monotonic

import gevent
import gevent.lock
import gevent.socket
from gevent.hub import get_hub
from greenlet import getcurrent

from fiberapp.runtime.errors import FiberappError

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
RECV_SIZE = 65536


class NetError(FiberappError):
    """Root of fiberapp.net's errors."""


class NetTimeout(NetError):
    """A connect or read took longer than its timeout."""


class ConnectFailed(NetError):
    """The peer could not be reached (refused, unreachable, name not found)."""


class ConnectionClosed(NetError):
    """The peer closed or reset the connection in the middle of a message."""


class FrameTooLarge(NetError):
    """A line or frame is longer than the stream's limit."""


def _on_readable(stream_ref):
    """A Stream's read watcher fired (in the hub): wake the waiting reader, or, if nobody
    waits, stop watching until the next wait."""
    stream = stream_ref()
    if stream is None:  # being collected: its finalizer closes the watcher
        return
    waiter = stream._waiter
    if waiter is not None:
        stream._waiter = None
        del stream  # the hub stays suspended here until the reader parks again
        waiter.switch()
    else:
        watcher = stream._watcher
        if watcher is not None:
            watcher.stop()


class Stream:
    """A connected socket with buffered, bounded reads. Not for sharing between fibers
    that read at the same time (one reader, one writer is fine).

    On a gevent socket (the normal case: the process is patched) reads and writes go to
    the raw non-blocking socket: a write is one send() when it fits the socket buffer
    (gevent's sendall would add a getsockopt, chunking and a timer per call), and a read
    that follows a read which drained the kernel queue waits for readability first
    instead of failing with EAGAIN (in request/answer protocols the answer is never there
    yet). The read timeout is one lazily re-armed loop timer per stream, not a gevent
    Timeout per wait: starting a wait stores a deadline, and the timer, when it fires,
    either re-arms itself for that deadline or, if it has passed, throws NetTimeout into
    the waiting fiber.

    read_line() returns a line that arrives alone and whole (an answer in a
    request/answer protocol) straight from the socket, not through the buffer.

    The wait for readability is the stream's own io watcher, started at the first wait
    and left running between waits (gevent's hub.wait starts and stops one per wait: when
    the stop and the next start fall in different loop iterations, libev re-adds the fd
    to epoll, an epoll_ctl that fails with EEXIST, about once per request/answer). The
    watcher is stopped only when it fires with nobody waiting (it is level-triggered:
    unread data would otherwise wake the loop on every iteration) and on close.
    """

    def __init__(self, sock, read_timeout=30.0, max_line=64 * 1024, max_frame=16 * 1024 * 1024):
        self.sock = sock
        self.max_line = max_line
        self.max_frame = max_frame
        self.read_timeout = read_timeout
        self._buf = bytearray()
        self._eof = False
        sock.settimeout(read_timeout)  # gevent's own paths (a write that fills the buffer) use it
        raw = getattr(sock, "_sock", None)
        event = getattr(sock, "_read_event", None)
        if type(sock) is not gevent.socket.socket or raw is None or event is None \
                or raw.gettimeout() != 0.0:
            # Not a plain gevent socket (TLS among others: its _sock is the TCP socket
            # under the encryption): the socket's own calls, never the raw fast path.
            raw = event = None
        self._raw = raw
        self._read_event = event
        self._drained = False  # the last recv emptied the kernel queue: wait before the next
        self._waiter = None  # the fiber waiting for readability, if any
        self._watcher = None  # the read watcher (created at the first wait)
        self._deadline = 0.0
        self._timer = None
        self._due = 0.0  # when the armed timer fires
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except (OSError, ValueError):  # gone already, or not an (host, port) address (AF_UNIX)
            self.peer = "?"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
            timer.close()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        waiter = self._waiter
        if waiter is not None and waiter is not getcurrent():
            # Closed by another fiber under a waiting reader: the reader gets
            # ConnectionClosed, from the loop (as gevent's own cancel_wait does it).
            get_hub().loop.run_callback(self._cancel_wait, waiter)
        self.sock.close()

    def _cancel_wait(self, waiter):
        if self._waiter is waiter:
            waiter.throw(ConnectionClosed(f"{self.peer}: the stream was closed while a read waited"))

    # -- reading -----------------------------------------------------------------------------

    def _fill(self):
        """Read what is available into the buffer; False at end of stream."""
        if self._eof:
            return False
        data = self._recv()
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _recv(self):
        """The next bytes from the socket (b"" at end of stream), waiting for them."""
        raw = self._raw
        if raw is None:
            try:
                data = self.sock.recv(RECV_SIZE)
            except socket.timeout:
                raise NetTimeout(f"{self.peer}: no data within {self.read_timeout}s") from None
            except OSError as exc:
                raise ConnectionClosed(f"{self.peer}: {exc}") from exc
        else:
            if self._drained:
                self._wait_readable()
            while True:
                try:
                    data = raw.recv(RECV_SIZE)
                    break
                except BlockingIOError:
                    self._wait_readable()
                except InterruptedError:
                    pass
                except OSError as exc:
                    raise ConnectionClosed(f"{self.peer}: {exc}") from exc
            self._drained = len(data) < RECV_SIZE
        return data

    def _wait_readable(self):
        timeout = self.read_timeout
        if timeout is not None:
            self._deadline = deadline = monotonic() + timeout
            timer = self._timer
            if timer is None:
                self._arm(timeout)
            elif deadline < self._due:  # read_timeout was shortened: the timer is too late
                self._timer = None
                timer.stop()
                timer.close()
                self._arm(timeout)
        watcher = self._watcher
        if watcher is None:
            fd = self._raw.fileno()
            if fd < 0:
                raise ConnectionClosed(f"{self.peer}: the stream is closed")
            watcher = self._watcher = get_hub().loop.io(fd, 1)
            # The loop holds the running watcher and its callback's argument, so that is
            # a weak reference: a Stream dropped without close() is still collected (its
            # socket closed), and the finalizer closes the watcher with it.
            self._self_ref = weakref.ref(self)
            weakref.finalize(self, watcher.close)
        if not watcher.active:
            watcher.start(_on_readable, self._self_ref)
        watcher.ref = True  # a reader waits: the loop must not end under it (LoopExit)
        self._waiter = getcurrent()
        try:
            get_hub().switch()
        finally:
            self._waiter = None
            watcher.ref = False  # left running between reads, it keeps nothing alive

    def _arm(self, delay):
        delay = max(delay, 0.0)
        self._due = monotonic() + delay
        timer = get_hub().loop.timer(delay)
        timer.ref = False  # a stream waiting for data is kept alive by its io watcher
        self._timer = timer
        timer.start(self._on_timer)

    def _on_timer(self):
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
        waiter = self._waiter
        if waiter is None:
            return  # nobody waits now: the next wait arms a new timer
        left = self._deadline - monotonic()
        if left > 0:
            self._arm(left)
        else:
            waiter.throw(NetTimeout(f"{self.peer}: no data within {self.read_timeout}s"))

    def read_line(self):
        """The next line without its terminator, or None at a clean end of stream."""
        if not self._buf and not self._eof:
            # Request/answer protocols: nothing is buffered and the answer arrives as one
            # whole line. Return it straight from the socket, not through the buffer.
            data = self._recv()
            if not data:
                self._eof = True
                return None
            end = len(data) - 1
            if data.find(b"\n") == end and end <= self.max_line:
                return data[:-2] if data.endswith(b"\r\n") else data[:-1]
            self._buf += data  # anything else: the general way
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                if end > self.max_line:
                    raise FrameTooLarge(f"{self.peer}: line longer than {self.max_line} bytes")
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > self.max_line:
                raise FrameTooLarge(f"{self.peer}: line longer than {self.max_line} bytes")
            start = len(self._buf)
            if not self._fill():
                if self._buf:
                    raise ConnectionClosed(f"{self.peer}: stream ended inside a line")
                return None

    def read_exactly(self, size):
        """Exactly size bytes; ConnectionClosed if the stream ends first."""
        while len(self._buf) < size:
            if not self._fill():
                raise ConnectionClosed(f"{self.peer}: stream ended after {len(self._buf)} of {size} bytes")
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read_frame(self):
        """The next length-prefixed payload, or None at a clean end of stream."""
        while not self._buf:
            if not self._fill():
                return None
        (size,) = _LENGTH.unpack(self.read_exactly(_LENGTH.size))
        if size > self.max_frame:
            raise FrameTooLarge(f"{self.peer}: frame of {size} bytes exceeds {self.max_frame}")
        return self.read_exactly(size)

    # -- writing -----------------------------------------------------------------------------

    def write(self, data):
        raw = self._raw
        if raw is not None:
            # Fast path: one non-blocking send (a small message fits the socket buffer).
            try:
                sent = raw.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                raise ConnectionClosed(f"{self.peer}: {exc}") from exc
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise NetTimeout(f"{self.peer}: write timed out") from None
        except OSError as exc:
            raise ConnectionClosed(f"{self.peer}: {exc}") from exc

    def write_line(self, line):
        """Send line (str is UTF-8 encoded) followed by \\n."""
        data = line.encode() if isinstance(line, str) else bytes(line)
        if b"\n" in data:
            raise ValueError("a line must not contain \\n")
        self.write(data + b"\n")

    def write_frame(self, payload):
        payload = bytes(payload)
        if len(payload) > self.max_frame:
            raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {self.max_frame}")
        self.write(_LENGTH.pack(len(payload)) + payload)


def connect(host, port, connect_timeout=5.0, read_timeout=30.0, **limits):
    """Open a TCP connection; returns a Stream. limits: max_line, max_frame.

    A numeric address (127.0.0.1, ::1) is connected to directly: name resolution (a trip
    through gevent's resolver thread pool per call) is only for names."""
    family = _numeric_family(host)
    try:
        if family is None:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(connect_timeout)
                sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
    except socket.timeout:
        raise NetTimeout(f"{host}:{port}: no connection within {connect_timeout}s") from None
    except OSError as exc:
        raise ConnectFailed(f"{host}:{port}: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Stream(sock, read_timeout=read_timeout, **limits)


def _numeric_family(host):
    """AF_INET / AF_INET6 for an IP address literal, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except (OSError, ValueError, TypeError):
            pass
    return None


class TcpServer:
    """Accepts connections and runs handler(stream) in one fiber per connection."""

    def __init__(
        self,
        handler,
        host="127.0.0.1",
        port=0,
        *,
        runtime,
        name="tcp",
        max_connections=1000,
        read_timeout=30.0,
        backlog=128,
        **limits,
    ):
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.handler = handler
        self.host = host
        self.port = port
        self.runtime = runtime
        self.name = name
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.backlog = backlog
        self.limits = limits
        self.accepted = 0
        self.handler_errors = 0
        self._slots = gevent.lock.BoundedSemaphore(max_connections)
        self._handlers = {}  # fiber -> its Stream
        self._listener = None
        self._address = None
        self._acceptor = None

    @property
    def address(self):
        """(host, port) actually bound (port 0 in the constructor picks a free one)."""
        return self._address

    @property
    def connections(self):
        return len(self._handlers)

    def start(self):
        """Bind and listen now (errors such as "address in use" raise here), then accept
        in a fiber named "<name>-accept"."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(self.backlog)
        except OSError as exc:
            listener.close()
            raise NetError(f"{self.name}: cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._listener = listener
        self._address = listener.getsockname()[:2]
        self._acceptor = self.runtime.spawn(self._accept_loop, name=f"{self.name}-accept")
        return self

    def _accept_loop(self):
        while True:
            self._slots.acquire()  # full: stop accepting until a handler ends
            try:
                sock, _ = self._listener.accept()
            except OSError as exc:
                self._slots.release()
                log.warning("%s: accept failed: %s", self.name, exc)
                gevent.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            except BaseException:
                self._slots.release()
                raise
            self.accepted += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = Stream(sock, read_timeout=self.read_timeout, **self.limits)
            fiber = self.runtime.spawn(self._serve, stream, name=f"{self.name}:{stream.peer}")
            self._handlers[fiber] = stream

    def _serve(self, stream):
        try:
            self.handler(stream)
        except NetError as exc:
            log.info("%s: %s", self.name, exc)
        except Exception:
            self.handler_errors += 1
            log.exception("%s: handler failed for %s", self.name, stream.peer)
        finally:
            stream.close()
            self._handlers.pop(gevent.getcurrent(), None)
            self._slots.release()

    def stop(self, timeout=5.0):
        """Stop accepting, wait up to timeout for the handlers to finish, cancel the rest.
        Returns how many handlers had to be cancelled. Idempotent."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.cancel()
            gevent.joinall([acceptor])
        if self._listener is not None:
            self._listener.close()
        handlers = list(self._handlers)
        gevent.joinall(handlers, timeout=timeout)
        late = [h for h in handlers if not h.dead]
        for fiber in late:
            fiber.cancel()
        gevent.joinall(late, timeout=timeout)
        for fiber in late:  # one cancelled before it ever ran never closed its socket
            stream = self._handlers.pop(fiber, None)
            if stream is not None:
                stream.close()
        return len(late)
