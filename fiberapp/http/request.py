"""Request: what a handler receives. Built by the server from the wire, or by a test by hand.

A Request is plain data plus two questions about the client: ``disconnected()`` (has the
peer hung up?) and ``on_disconnect(fn)`` / ``cancel_on_disconnect()`` for handlers that
wait (long polls). Requests built with Request.build() have no connection: they are never
disconnected, which is what in-process handler tests want.

Headers are kept as the raw (name, value) byte pairs the parser produced; the str dict
(lower-cased names, latin-1 values as HTTP defines them) is built on first use, so a
handler that never looks at headers costs nothing for them.
"""
from urllib.parse import parse_qs, unquote_to_bytes

import orjson

from .errors import BadRequest


class Request:
    __slots__ = (
        "method", "path", "query_string", "raw_headers", "body", "version", "keep_alive",
        "params", "route", "remote_addr", "_headers", "_query", "_conn", "__weakref__",
    )

    def __init__(self, method, path, query_string="", raw_headers=(), body=b"", version="1.1",
                 keep_alive=True, remote_addr=None, conn=None):
        self.method = method            # "GET", upper case
        self.path = path                # decoded str path, no query
        self.query_string = query_string  # raw str after "?"
        self.raw_headers = raw_headers  # list of (name bytes, value bytes) as received
        self.body = body                # bytes (chunked bodies already joined)
        self.version = version          # "1.1" or "1.0"
        self.keep_alive = keep_alive
        self.remote_addr = remote_addr
        self.params = {}                # typed path parameters (a read-only mapping), set by the router
        self.route = None               # the matched Route, set by the router
        self._headers = None
        self._query = None
        self._conn = conn

    @classmethod
    def build(cls, method, target, *, body=b"", headers=None, json=None, version="1.1"):
        """A request without a connection, for calling handlers in-process.

        ``target`` is a path with an optional query string ("/a/b?x=1"); ``json`` encodes
        a body with orjson and sets Content-Type.
        """
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        if json is not None:
            body = orjson.dumps(json)
            raw.append((b"Content-Type", b"application/json"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        path, _, query = target.partition("?")
        return cls(method.upper(), decode_path(path.encode("latin-1")), query, raw, bytes(body),
                   version)

    # -- headers and query -------------------------------------------------------
    @property
    def headers(self):
        """dict: lower-cased header name -> value (repeated headers joined with ", ")."""
        h = self._headers
        if h is None:
            h = {}
            for name, value in self.raw_headers:
                key = name.decode("latin-1").lower()
                val = value.decode("latin-1")
                h[key] = f"{h[key]}, {val}" if key in h else val
            self._headers = h
        return h

    def header(self, name, default=None):
        """One header's value, as headers.get(name) gives it (repeats joined with ", ").

        Until something asks for the whole dict, this scans the raw pairs instead of
        building it: handlers that read one header (the API's session header on every
        take and ack) would otherwise decode and lower-case every header of the request.
        """
        key = name.lower()
        if self._headers is not None:
            return self._headers.get(key, default)
        raw = key.encode("latin-1")
        n = len(raw)
        found = [v for k, v in self.raw_headers if len(k) == n and k.lower() == raw]
        if not found:
            return default
        return found[0].decode("latin-1") if len(found) == 1 else ", ".join([v.decode("latin-1") for v in found])

    @property
    def query(self):
        """dict: query parameter -> last value given (use query_all() for repeats)."""
        q = self._query
        if q is None:
            q = {k: v[-1] for k, v in self.query_all().items()}
            self._query = q
        return q

    def query_all(self):
        try:
            return parse_qs(self.query_string, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("query string is not valid UTF-8") from None

    @property
    def content_type(self):
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    def json(self):
        """The body decoded as JSON; BadRequest (400) if it is not JSON."""
        if not self.body:
            raise BadRequest("a JSON body is required")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None

    def text(self):
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not valid UTF-8") from None

    # -- the client going away ---------------------------------------------------
    def disconnected(self):
        """True when the client has closed its side (EOF or reset) while we hold the request.

        Cheap (one non-blocking peek). Data the client pipelined behind this request counts
        as "still connected". Always False for requests built in-process.
        """
        return self._conn is not None and self._conn.peer_gone()

    def on_disconnect(self, fn):
        """Call fn() (in the hub: it must not block; wake someone and return) if the
        client hangs up before this request's handler returns. Returns a handle with
        cancel(). For in-process requests fn is never called.
        """
        if self._conn is None:
            return _NoWatch()
        return self._conn.watch_disconnect(fn)

    def cancel_on_disconnect(self):
        """Have ClientDisconnected thrown into the calling fiber if the client hangs up.

        Meant for a handler about to wait (a long-poll take): the wait is interrupted at
        its yield, the handler unwinds, nothing is sent. Returns the watch handle.
        """
        if self._conn is None:
            return _NoWatch()
        return self._conn.cancel_on_disconnect()

    def __repr__(self):
        return f"<Request {self.method} {self.path}{'?' if self.query_string else ''}{self.query_string}>"


class _NoWatch:
    def cancel(self):
        pass


def decode_path(raw):
    """Percent-decode a request path (bytes) to str; BadRequest if it is not UTF-8."""
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request path is not valid UTF-8") from None

