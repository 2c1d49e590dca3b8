"""A minimal keep-alive HTTP/1.1 client for the load generator's hot path.

Why not geventhttpclient or urllib: the generator keeps up to ~20,000 connections in
one process and sends thousands of requests a second from one core; every microsecond
per request shows. So requests are pre-encoded bytes (``RequestTemplate``), one
connection is one gevent socket plus one httptools (llhttp) response parser that is
reused across responses, and there is no pooling, redirect or TLS logic. Only what a
load tool needs: one request at a time per connection, Content-Length or chunked
responses, reconnect after the server closes.

Connections shared by several fibers pipeline their requests: see pipeline.py.

Errors are typed by kind (the report groups them by ``kind``): ConnectFailed,
Closed (EOF or reset), Timeout (socket timeouts are real time, not the FakeClock: they
only guard against a hung server) and Protocol (unparsable response).
"""
import errno

import httptools
from gevent import socket

_RECV = 65536


class ClientError(Exception):
    kind = "client"


class ConnectFailed(ClientError):
    kind = "connect"


class Closed(ClientError):
    kind = "closed"


class Timeout(ClientError):
    kind = "timeout"


class Protocol(ClientError):
    kind = "protocol"


class RequestTemplate:
    """Pre-encoded request head: only the body and, for POST, its length vary."""

    __slots__ = ("_head", "_has_body")

    def __init__(self, method, path, host):
        has_body = method in ("POST", "PUT", "PATCH")
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
        if has_body:
            head += "Content-Type: application/json\r\nContent-Length: "
        else:
            head += "\r\n"
        self._head = head.encode("latin-1")
        self._has_body = has_body

    def encode(self, body=b""):
        if self._has_body:
            return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        return self._head


class Connection:
    """One keep-alive connection to (host, port); ``request`` is not re-entrant."""

    __slots__ = ("address", "timeout", "_sock", "_parser", "_body", "_done", "_buf", "_used", "_status", "_keep")

    def __init__(self, address, timeout=10.0, buf=None):
        self.address = address  # (ip, port), resolved once by the caller
        self.timeout = timeout
        self._sock = None
        self._parser = None
        self._body = []
        self._done = False
        # The receive buffer may be shared by every connection of a process: a recv
        # into it is followed by feed_data (which copies what it keeps) with no yield
        # in between. One 64 KiB buffer per connection would be 1.3 GB at 20,000.
        self._buf = bytearray(_RECV) if buf is None else buf
        self._used = False  # a response has been read on this socket
        self._status = 0
        self._keep = False

    # httptools callbacks. Status and keep-alive are read when the headers are
    # complete: after on_message_complete llhttp has already reset for the next message.
    def on_headers_complete(self):
        self._status = self._parser.get_status_code()
        self._keep = self._parser.should_keep_alive()

    def on_body(self, data):
        self._body.append(data)

    def on_message_complete(self):
        self._done = True

    def connect(self):
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except socket.timeout:
            raise Timeout(f"connect to {self.address[0]}:{self.address[1]} timed out") from None
        except OSError as e:
            raise ConnectFailed(f"connect to {self.address[0]}:{self.address[1]}: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._parser = httptools.HttpResponseParser(self)
        self._used = False

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._parser = None

    @property
    def connected(self):
        return self._sock is not None

    def request(self, data, timeout=None):
        """Send pre-encoded ``data``; returns (status, body bytes).

        A request on a reused connection that the server closed while idle (EOF before
        any byte of the answer) is retried once on a new connection, as browsers do;
        every other failure raises a ClientError and leaves the connection closed.
        """
        reused = self._sock is not None and self._used
        try:
            return self._request(data, timeout)
        except Closed as e:
            if not (reused and e.args and e.args[0] == "idle"):
                raise
        return self._request(data, timeout)

    def _request(self, data, timeout):
        if self._sock is None:
            self.connect()
        sock = self._sock
        sock.settimeout(self.timeout if timeout is None else timeout)
        self._body = []
        self._done = False
        got_any = False
        try:
            sock.sendall(data)
            while not self._done:
                n = sock.recv_into(self._buf)
                if not n:
                    raise Closed("idle" if not got_any else "closed mid-response")
                got_any = True
                self._parser.feed_data(memoryview(self._buf)[:n])
        except socket.timeout:
            self.close()
            raise Timeout("no response in time") from None
        except httptools.HttpParserError as e:
            self.close()
            raise Protocol(f"bad response: {e}") from None
        except Closed:
            self.close()
            raise
        except OSError as e:
            self.close()
            if e.errno in (errno.EPIPE, errno.ECONNRESET) and not got_any:
                raise Closed("idle") from None
            raise Closed(f"connection error: {e.strerror or e}") from None
        except BaseException:
            # Killed (end of run) or cancelled mid-request: the connection is in an
            # unknown state, so it cannot be reused.
            self.close()
            raise
        status = self._status
        self._used = True
        if not self._keep:
            self.close()
        body = self._body
        return status, (body[0] if len(body) == 1 else b"".join(body))
