"""Response, and the conversion of what a handler returns into one.

A handler may return:
    Response                -> as is
    dict or list            -> JSON (orjson), 200
    str                     -> text/plain; charset=utf-8, 200
    bytes/bytearray/memoryview -> application/octet-stream, 200
    None                    -> 204 No Content
    (value, status)         -> any of the above with that status
Anything else is a programming error (TypeError -> 500).

Serialisation (head()) is the server's hot path: status lines and the common header
lines are pre-encoded, and the Date header is rebuilt at most once a second.
"""
from decimal import Decimal
from http import HTTPStatus
from types import MappingProxyType

import orjson

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1") for code, phrase in _REASONS.items()}

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"


_END = b"\r\n"
_END_CLOSE = b"Connection: close\r\n\r\n"
_END_KEEP_10 = b"Connection: keep-alive\r\n\r\n"


def _ct_line(ct):
    return b"Content-Type: " + (ct if isinstance(ct, bytes) else ct.encode("latin-1")) + b"\r\n"


_SMALL = 4096
_LENGTH_LINES = tuple(b"Content-Length: %d\r\n" % n for n in range(_SMALL))  # pre-encoded, immutable
# The common types, as bytes and as str (handlers pass either): no encoding per response.
_CT_LINES = MappingProxyType({form: _ct_line(ct) for ct in (JSON, TEXT, OCTETS, b"text/html; charset=utf-8")
                              for form in (ct, ct.decode("latin-1"))})


def status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status}")
        line = f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")
    return line


class Response:
    """status, body (bytes), content_type (bytes or str) and extra headers [(name, value)]."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, body=b"", status=200, headers=None, content_type=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None:
                content_type = TEXT
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers if headers is not None else ()  # [(name, value)]; see add_header

    @classmethod
    def json(cls, obj, status=200, headers=None):
        return cls(dumps(obj), status, headers, JSON)

    @classmethod
    def text(cls, text, status=200, headers=None):
        return cls(text.encode("utf-8"), status, headers, TEXT)

    def header(self, name, default=None):
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def json_body(self):
        """The body decoded as JSON (for tests and clients of in-process calls)."""
        return orjson.loads(self.body)

    def add_header(self, name, value):
        if not isinstance(self.headers, list):
            self.headers = list(self.headers)
        self.headers.append((name, value))

    def encode(self, date_line, keep_alive, http10=False, head_only=False):
        """The whole response (status line, headers, blank line, body) as one bytes."""
        status = self.status
        body = self.body
        if keep_alive and not http10 and not head_only and not self.headers:
            # The common answer (keep-alive HTTP/1.1, a body, a known status and type, no
            # extra headers): one join of a tuple, the same bytes as the general path.
            n = len(body)
            line = _STATUS_LINES.get(status)
            if line is not None and n < _SMALL and status >= 200 and status != 204 and status != 304:
                ct = self.content_type
                ct_line = b"" if ct is None else _CT_LINES.get(ct)
                if ct_line is not None:
                    return b"".join((line, date_line, _LENGTH_LINES[n], ct_line, _END, body))
        parts = [_STATUS_LINES.get(status) or status_line(status), date_line]
        if status >= 200 and status != 204 and status != 304:
            n = len(body)
            parts.append(_LENGTH_LINES[n] if n < _SMALL else b"Content-Length: %d\r\n" % n)
            ct = self.content_type
            if ct is not None:
                parts.append(_CT_LINES.get(ct) or _ct_line(ct))
        if self.headers:
            parts.append("".join([f"{k}: {v}\r\n" for k, v in self.headers]).encode("latin-1"))
        parts.append(_END_KEEP_10 if http10 and keep_alive else _END if keep_alive else _END_CLOSE)
        if not head_only:
            parts.append(body)
        return b"".join(parts)

    def __repr__(self):
        return f"<Response {self.status} {len(self.body)} bytes>"


def _json_default(obj):
    # What database rows hold and orjson does not encode: numeric columns arrive as
    # Decimal. A string keeps every digit (as money should); sets become lists.
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj):
    """orjson, plus the types handlers commonly return from databases (Decimal, sets)."""
    return orjson.dumps(obj, default=_json_default)


def to_response(value):
    """Turn a handler's return value into a Response (see the module docstring)."""
    t = type(value)
    if t is Response:
        return value
    if t is str:
        return _fast(value.encode("utf-8"), TEXT)
    if t is dict or t is list:
        return _fast(dumps(value), JSON)
    if isinstance(value, (dict, list)):
        return Response(dumps(value), 200, None, JSON)
    if isinstance(value, str):
        return Response(value.encode("utf-8"), 200, None, TEXT)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Response(bytes(value), 200, None, OCTETS)
    if value is None:
        return Response(b"", 204)
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        resp = to_response(value[0])
        resp.status = value[1]
        return resp
    raise TypeError(f"a handler returned {type(value).__name__}: return a Response, dict, list, str, bytes or None")


def _fast(body, content_type):
    """Response(body, 200, None, content_type) without the Python __init__ (hot path)."""
    resp = _new_object(Response)
    resp.status = 200
    resp.body = body
    resp.content_type = content_type
    resp.headers = ()
    return resp


_new_object = object.__new__


def error_body(code, message):
    """The JSON body every error has, from the server, the router and the API alike:
    {"error": {"code": "snake_case", "message": "..."}}."""
    return {"error": {"code": code, "message": message}}


def error_response(status, code, message, headers=()):
    return Response(orjson.dumps(error_body(code, message)), status, headers, JSON)
