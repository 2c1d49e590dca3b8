"""to_response: what handlers may return, including values straight from database rows."""
from decimal import Decimal

import pytest

from fiberapp.http.response import to_response


def test_database_types_encode():
    # numeric columns arrive as Decimal: every digit kept, as a string; sets as lists
    resp = to_response({"price": Decimal("10.10"), "tags": {"a"}})
    assert resp.json_body() == {"price": "10.10", "tags": ["a"]}


def test_unencodable_value_is_a_type_error():
    with pytest.raises(TypeError):
        to_response({"x": object()})


def _general(resp, date_line, keep_alive, http10=False, head_only=False):
    """What Response.encode gives on its general path (the fast path must agree)."""
    from fiberapp.http import response as r

    parts = [r.status_line(resp.status), date_line]
    if resp.status >= 200 and resp.status not in (204, 304):
        parts.append(b"Content-Length: %d\r\n" % len(resp.body))
        if resp.content_type is not None:
            ct = resp.content_type
            parts.append(b"Content-Type: " + (ct if isinstance(ct, bytes) else ct.encode("latin-1")) + b"\r\n")
    if resp.headers:
        parts.append("".join(f"{k}: {v}\r\n" for k, v in resp.headers).encode("latin-1"))
    parts.append(b"Connection: keep-alive\r\n\r\n" if http10 and keep_alive else b"\r\n" if keep_alive
                 else b"Connection: close\r\n\r\n")
    if not head_only:
        parts.append(resp.body)
    return b"".join(parts)


def test_encode_fast_path_gives_the_general_bytes():
    from fiberapp.http.response import JSON, TEXT, Response

    date = b"Date: Sun, 22 Nov 2026 06:00:00 GMT\r\n"
    cases = [
        Response(b'{"a":1}', 200, None, JSON), Response(b'{"a":1}', 201, None, "application/json"),
        Response("text"), Response(b"", 200), Response(b"x", 200, None, None), Response(b"", 204),
        Response(b"", 304), Response(b"z", 599, None, TEXT), Response(b"y" * 5000, 200, None, JSON),
        Response(b"y" * 4095, 200, None, JSON), Response(b"q", 200, [("X-A", "b")], JSON),
        Response(b"q", 200, None, "text/csv"), Response(b"", 101),
    ]
    for resp in cases:
        for keep in (True, False):
            for http10 in (False, True):
                for head in (False, True):
                    assert resp.encode(date, keep, http10, head) == _general(resp, date, keep, http10, head), \
                        (resp, keep, http10, head)
