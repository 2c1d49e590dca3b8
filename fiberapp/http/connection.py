"""One client connection: read, parse (httptools/llhttp), answer in order, repeat.

This is the server's hot loop; the tricks it uses, and why:

- One receive buffer per *server*, not per connection: recv_into() fills it and
  feed_data() consumes it with no yield in between (the parser copies what it keeps), so
  connections can share it and an idle connection costs no buffer memory.
- Everything parsed from one recv is answered with one sendall (pipelining: responses in
  request order, one syscall for the batch).
- The wait for the next bytes is one io watcher per connection, started at the first
  wait and left running between waits (stopped only when it fires while nobody reads),
  so a keep-alive request costs no epoll_ctl.
- Timeouts are one lazily re-armed clock timer per connection: moving a deadline later is
  an attribute store; the timer, when it fires, re-arms itself for the current deadline
  or, if that has passed, shuts the socket down, which wakes the blocked recv/sendall.
  Because it goes through the server's clock, tests drive it with a FakeClock.
- While a handler runs there is no deadline (long polls may wait as long as they like);
  the client going away is detected with a non-blocking MSG_PEEK (Request.disconnected)
  or, for handlers that wait, an io watcher on the socket (Request.on_disconnect /
  cancel_on_disconnect).

Nothing a client sends escapes this module as an exception: malformed input gets a 400,
oversize input 431/413, and in each case the connection closes.
"""
import logging
import socket as _socket

import gevent
from greenlet import getcurrent
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from .disconnect import DisconnectWatch, peer_gone
from .errors import BadRequest, ClientDisconnected
from .request import Request, decode_path
from .router import NO_PARAMS
from .response import error_response

log = logging.getLogger("fiberapp.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_new_object = object.__new__
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")}


_TOO_LARGE = error_response(431, "request_header_fields_too_large", "request line and headers are too large")
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
_INTERNAL = error_response(500, "internal_error", "internal server error")


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing: the request breaks a limit."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Connection:
    __slots__ = (
        "server", "sock", "addr", "parser", "_ready", "_url", "_headers", "_body", "_body_size",
        "_hdr_size", "_hdr_raw", "_conn_hdr", "_in_message", "_in_headers", "_expect", "_continue_sent", "_deadline",
        "_timer", "_timer_at", "_hdr_clock", "_idle", "_busy", "_sending", "_watches", "_closed", "_max_header", "_max_body",
        "_watcher", "_reader",
    )

    def __init__(self, server, sock, addr):
        self.server = server
        self.sock = sock
        self.addr = addr
        self.parser = HttpRequestParser(self)
        self._ready = []
        self._in_message = False
        self._in_headers = False
        self._deadline = None
        self._timer = None
        self._timer_at = None
        self._idle = True       # waiting for the first byte of a request
        self._busy = False      # a handler is running
        self._sending = False   # blocked writing a response the client does not read
        self._watches = None
        self._watcher = None    # the read watcher (serve() creates it)
        self._reader = None     # our fiber while it waits on the read watcher
        self._closed = False
        self._max_header = server.config.max_header_size
        self._max_body = server.config.max_body_size

    # -- parser callbacks (called from inside feed_data; they must not yield) -------
    def on_message_begin(self):
        self._in_message = True
        self._in_headers = True
        self._url = b""
        self._headers = []
        self._body = None
        self._body_size = 0
        self._hdr_size = 0
        self._hdr_raw = 0
        self._conn_hdr = False
        self._expect = False
        self._continue_sent = False
        self._hdr_clock = False  # the header deadline starts at a request's first byte

    def on_url(self, url):
        self._url += url
        self._hdr_size += len(url)
        if self._hdr_size > self._max_header:
            raise _Reject(431, "request_header_fields_too_large", "request line and headers are too large")

    def on_header(self, name, value):
        self._headers.append((name, value))
        n = len(name)
        size = self._hdr_size + n + len(value) + 4
        self._hdr_size = size
        if size > self._max_header:
            raise _Reject(431, "request_header_fields_too_large", "request line and headers are too large")
        if n == 14 or n == 10 or n == 6:  # only then can it be Content-Length, Connection or Expect
            self._framing_header(name.lower(), value)

    def _framing_header(self, name, value):
        if name == b"connection":
            self._conn_hdr = True
        elif name == b"content-length":
            # Refuse before reading (or inviting, with 100-continue) the body.
            if value.strip().isdigit() and int(value) > self._max_body:
                raise _Reject(413, "payload_too_large", f"body larger than {self._max_body} bytes")
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            self._expect = True

    def on_headers_complete(self):
        self._in_headers = False

    def on_body(self, data):
        self._body_size += len(data)
        if self._body_size > self._max_body:
            raise _Reject(413, "payload_too_large", f"body larger than {self._max_body} bytes")
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)

    def on_message_complete(self):
        p = self.parser
        body = self._body
        self._in_message = False
        keep_alive = p.should_keep_alive()
        if self._conn_hdr:
            version = p.get_http_version()
        else:
            # Without a Connection header, keep-alive is exactly "HTTP/1.1" (1.0 closes by
            # default), and get_http_version() formats a string: skip it on the hot path.
            version = "1.1" if keep_alive else "1.0"
        body = b"" if body is None else body[0] if len(body) == 1 else b"".join(body)
        url = self._url
        method = _METHODS.get(p.get_method())
        path = None
        if method is not None and url[:1] == b"/":
            # The common request, built here (_target has the rest): no second
            # Python call per request, and one method call on the target (each costs
            # ~900 instructions) where startswith/isascii/find/partition took five.
            # Not `b"%" in url`: bytes.__contains__ first tries its argument as an int,
            # and the TypeError it raises and clears costs ~2,000 instructions.
            try:
                path = url.decode("ascii")
            except UnicodeDecodeError:
                pass
            else:
                if "%" in path:
                    path = None
                elif "?" in path:
                    path, _, query = path.partition("?")
                else:
                    query = ""
        if path is None:  # anything else: an unknown method, "%", "*", an absolute URL
            target = self._target(p.get_method(), url)
            if target.__class__ is not tuple:  # an error Response: answered in its turn
                self._ready.append(target)
                self._url = self._headers = self._body = None
                return
            method, path, query = target
        rq = _new_object(Request)  # Request.__init__ inlined: the same fields, in order
        rq.method = method
        rq.path = path
        rq.query_string = query
        rq.raw_headers = self._headers
        rq.body = body
        rq.version = version
        rq.keep_alive = keep_alive
        rq.remote_addr = self.addr
        rq.params = NO_PARAMS
        rq.route = None
        rq._headers = None
        rq._query = None
        rq._conn = self
        self._ready.append(rq)
        # Drop our references: an idle keep-alive connection should hold no request data.
        self._url = self._headers = self._body = None

    # -- the loop -------------------------------------------------------------------
    def serve(self):
        server = self.server
        config = server.config
        buf, view = server.buffer, server.view
        bufsize = len(buf)
        # The raw (non-blocking) socket, so the common case is one syscall and no
        # exception: gevent's recv_into would try first and fail with EAGAIN after every
        # response. We wait for readability when the last read did not fill the buffer
        # (the kernel queue is then almost surely empty), on the connection's own read
        # watcher, which stays started between waits (see _on_readable): gevent's
        # hub.wait starts and stops one per wait, and a stop and a start in different
        # loop iterations cost an epoll_ctl (EEXIST) per request.
        raw_recv_into = self.sock._sock.recv_into
        hub = gevent.get_hub()
        hub_switch = hub.switch
        watcher = self._watcher = hub.loop.io(self.sock.fileno(), 1)
        on_readable = self._on_readable
        me = getcurrent()
        feed = self.parser.feed_data
        ready = self._ready
        monotonic = server.monotonic
        self._set_deadline(monotonic() + config.header_timeout)
        drained = False
        try:
            while True:
                try:
                    if drained:
                        if not watcher.active:
                            watcher.start(on_readable)
                        self._reader = me
                        try:
                            hub_switch()
                        finally:
                            self._reader = None
                    n = raw_recv_into(buf)
                except BlockingIOError:
                    drained = True
                    continue
                except OSError:
                    return
                if not n:
                    return
                drained = n < bufsize
                self._idle = False
                error = None
                upgrade = False
                try:
                    feed(view[:n])
                except HttpParserCallbackError as exc:
                    ctx = exc.__context__
                    if isinstance(ctx, _Reject):
                        error = error_response(ctx.status, ctx.code, ctx.message)
                    else:
                        error = error_response(400, "bad_request", "malformed request")
                except HttpParserUpgrade:
                    # No protocol upgrades (websocket, h2c): the upgrade request is answered
                    # as plain HTTP (the Upgrade header ignored), then the connection closes.
                    upgrade = True
                except HttpParserError as exc:
                    error = error_response(400, "bad_request", f"malformed request: {exc}")
                if ready:
                    keep = self._answer(ready, upgrade)
                    ready.clear()
                    if not keep:
                        return
                if error is not None:
                    self._send(error.encode(server.date_line, False))
                    self._linger()
                    return
                if upgrade:
                    return
                if self._in_message:
                    now = monotonic()
                    if self._in_headers:
                        # httptools buffers an unfinished header line without calling us
                        # back, so bound the raw bytes too (over-counted by at most the part
                        # of one buffer that belonged to the previous request).
                        self._hdr_raw += n
                        if self._hdr_raw > self._max_header + bufsize:
                            self._send(_TOO_LARGE.encode(server.date_line, False))
                            self._linger()
                            return
                        if not self._hdr_clock:
                            self._hdr_clock = True
                            self._set_deadline(now + config.header_timeout)
                    else:
                        self._set_deadline(now + config.body_timeout)
                        if self._expect and not self._continue_sent and self.parser.get_http_version() == "1.1":
                            self._continue_sent = True
                            self._send(_CONTINUE)
                else:
                    self._idle = True
                    if server.stopping:
                        return
        except ClientDisconnected:
            return
        finally:
            self.close()

    def _on_readable(self):
        """The read watcher fired (in the hub): wake the connection's fiber if it waits
        to read; if it does not (a handler runs and the client pipelined, or hung up),
        stop watching until the next wait: the watcher is level-triggered, and unread
        bytes would otherwise wake the loop on every iteration."""
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.switch()
        else:
            watcher = self._watcher
            if watcher is not None:
                watcher.stop()

    def _answer(self, ready, force_close):
        """Run the handler for each complete request, send all responses at once.

        Returns whether the connection stays open.
        """
        server = self.server
        date_line = server.date_line
        app = server.app
        metrics = server.metrics
        plain = metrics is None and server.access_log is None
        counted = metrics is not None and server.access_log is None  # _handle, written out
        monotonic = server.monotonic
        out = []
        keep = True
        self._deadline = None  # handlers may take as long as they like
        self._busy = True
        try:
            for request in ready:
                if request.__class__ is Request:
                    if plain or counted:
                        if counted:
                            t0 = monotonic()
                        try:
                            resp = app(request)
                        except ClientDisconnected:
                            raise
                        except Exception:
                            log.exception("application raised for %s %s", request.method, request.path)
                            resp = _INTERNAL
                        if counted:
                            route = request.route
                            metrics.observe("<unmatched>" if route is None else route.name, request.method,
                                            resp.status, monotonic() - t0)
                    else:
                        resp = self._handle(request)
                    # server.stopping read after the handler: a stop may begin while it runs
                    keep = request.keep_alive and not force_close and not server.stopping
                    try:
                        data = resp.encode(date_line, keep, request.version == "1.0", request.method == "HEAD")
                    except Exception:  # a bad status or a header that is not latin-1: the handler's bug
                        log.exception("unsendable response %r for %s %s", resp, request.method, request.path)
                        data = _INTERNAL.encode(date_line, keep)
                    out.append(data)
                else:  # a request the parser took but we cannot (bad target): 400 and close
                    keep = False
                    out.append(request.encode(date_line, False))
                if not keep:
                    break
        finally:
            self._busy = False
            if self._watches:
                self._drop_watches()
        self._send(out[0] if len(out) == 1 else b"".join(out))
        deadline = server.monotonic() + server.config.idle_timeout
        if self._timer_at is None or deadline < self._timer_at:
            self._set_deadline(deadline)
        else:
            self._deadline = deadline  # the armed timer re-arms itself for this
        return keep

    def _linger(self):
        """After an error reply on a connection the client may still be writing to (a body
        we refused): half-close, then read and discard for a moment. Closing with unread
        input makes the kernel send a reset, which can destroy the reply before the client
        reads it. Bounded in time (LINGER_SECONDS on the clock) and in bytes."""
        try:
            self.sock._sock.shutdown(_socket.SHUT_WR)
        except OSError:
            return
        server = self.server
        self._set_deadline(server.clock.monotonic() + LINGER_SECONDS)
        discarded = 0
        while discarded < LINGER_BYTES:
            try:
                n = self.sock.recv_into(server.buffer)
            except OSError:
                return
            if not n:
                return
            discarded += n

    def _handle(self, request):
        """Run the app with metrics and/or the access log (the plain path is inline in _answer)."""
        server = self.server
        monotonic = server.monotonic
        t0 = monotonic()
        try:
            resp = server.app(request)
        except ClientDisconnected:
            raise
        except Exception:
            log.exception("application raised for %s %s", request.method, request.path)
            resp = _INTERNAL
        elapsed = monotonic() - t0
        route = request.route.name if request.route is not None else "<unmatched>"
        if server.metrics is not None:
            server.metrics.observe(route, request.method, resp.status, elapsed)
        if server.access_log is not None:
            server.access_log.info("%s %s %s %d %d %.3fms", self.addr[0] if self.addr else "-", request.method,
                                   request.path, resp.status, len(resp.body), elapsed * 1000.0)
        return resp

    def _target(self, method, url):
        """(method, path, query) of a request on_message_complete's common case did not
        take, or an error Response if the target is unusable.

        Called from on_message_complete: it must not yield, and a bad target must not
        raise (that would abort the parse of everything pipelined behind it).
        """
        meth = _METHODS.get(method) or method.decode("latin-1")
        if url.startswith(b"/") and url.isascii() and url.find(b"%") < 0:
            # The common case: decode once, split the str.
            path, _, query = url.decode("ascii").partition("?")
        else:
            try:
                if url.startswith(b"/"):
                    raw_path, _, raw_query = url.partition(b"?")
                elif url == b"*":
                    raw_path, raw_query = url, b""
                else:
                    try:
                        parsed = parse_url(url)
                    except HttpParserError:
                        raise BadRequest("malformed request target") from None
                    raw_path, raw_query = parsed.path or b"/", parsed.query or b""
                path = decode_path(raw_path)
                query = raw_query.decode("latin-1")
            except BadRequest as exc:
                return error_response(400, exc.code, exc.message)
        return meth, path, query

    def _send(self, data):
        # Fast path: a small response fits the socket buffer in one non-blocking send.
        try:
            sent = self.sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise ClientDisconnected() from None
        if sent == len(data):
            return
        server = self.server
        self._set_deadline(server.clock.monotonic() + server.config.send_timeout)
        self._sending = True
        try:
            self.sock.sendall(memoryview(data)[sent:])
        except OSError:
            raise ClientDisconnected() from None
        finally:
            self._sending = False

    # -- deadlines --------------------------------------------------------------------
    def _set_deadline(self, deadline):
        self._deadline = deadline
        at = self._timer_at
        if at is None or deadline < at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.server.clock.call_at(deadline, self._on_timer)

    def _on_timer(self):
        self._timer = None
        self._timer_at = None
        deadline = self._deadline
        if deadline is None or self._closed:
            return  # a handler is running (no deadline) or we are gone
        if self.server.clock.monotonic() >= deadline:
            self._shutdown()
        else:
            self._timer_at = deadline
            self._timer = self.server.clock.call_at(deadline, self._on_timer)

    def _shutdown(self):
        """Wake whatever the connection is blocked on (recv or sendall): it sees EOF/EPIPE.

        The raw socket's shutdown, not gevent's: gevent's would also cancel the waits
        with an exception, where EOF is the plain, expected way out.
        """
        try:
            self.sock._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def state(self):
        """One of: idle (between requests), headers, body (reading), handler, sending, closed."""
        if self._closed:
            return "closed"
        if self._busy:
            return "handler"
        if self._sending:
            return "sending"
        if self._in_message:
            return "headers" if self._in_headers else "body"
        return "idle"

    def close_if_idle(self):
        """For graceful stop: close now if waiting between requests; else after the reply."""
        if self._idle and not self._in_message and not self._busy:
            self._shutdown()

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        self._drop_watches()
        try:
            self.sock.close()
        except OSError:
            pass

    # -- the client going away while a handler runs --------------------------------
    def peer_gone(self):
        return self._closed or peer_gone(self.sock)

    def watch_disconnect(self, fn):
        watch = DisconnectWatch(self, fn)
        if self._watches is None:
            self._watches = [watch]
        else:
            self._watches.append(watch)
        watch.start()
        return watch

    def cancel_on_disconnect(self):
        target = gevent.getcurrent()
        return self.watch_disconnect(lambda: gevent.kill(target, ClientDisconnected))

    def _drop_watches(self):
        watches = self._watches
        if watches:
            self._watches = None
            for w in watches:
                w.cancel()
