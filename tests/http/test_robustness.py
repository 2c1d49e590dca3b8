"""Whatever bytes a client sends, the server answers or closes that connection and lives on."""
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiberapp.http import Router

from .helpers import RawClient, get

_PIECES = [
    b"GET ", b"POST ", b"HEAD ", b"OPTIONS ", b"CONNECT ", b"/", b"/echo", b"/items/1", b"*", b"http://h/x?y=1",
    b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b" HTTP/2.0\r\n", b"Host: h\r\n", b"Content-Length: 3\r\n",
    b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n",
    b"Connection: close\r\n", b"Connection: upgrade\r\nUpgrade: websocket\r\n", b"\r\n", b"abc",
    b"3\r\nabc\r\n", b"0\r\n\r\n", b"%ff", b"?q=%ff", b"\x00", b"\xff\xfe", b" ", b"\n",
]


def _app():
    r = Router()
    r.add("GET", "/items/{id:int}", lambda req: {"id": req.params["id"]})
    r.add("POST", "/echo", lambda req: req.body)
    return r


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=40)), max_size=12))
def test_arbitrary_input_never_hurts_the_server(serve_once, chunks):
    server, caplog = serve_once
    c = RawClient(server.address)
    try:
        for chunk in chunks:
            try:
                c.send(chunk)
            except OSError:
                break  # the server already closed on us: fine
        c.sock.shutdown(1)  # no more input: the server must answer what it can, then close
        assert c.closed_by_peer()
        for resp in c.responses:
            assert resp["status"] < 500, resp
    finally:
        c.close()
    # ... and the server is still fine for the next client
    good = RawClient(server.address)
    good.send(get("/items/3"))
    assert good.read_response()["body"] == b'{"id":3}'
    good.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def serve_once():
    # One server for all examples (hypothesis runs them in one test call).
    from fiberapp.http import HTTPServer
    from fiberapp.runtime.clock import FakeClock

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    handler = Records()
    logging.getLogger("fiberapp.http").addHandler(handler)
    server = HTTPServer(_app(), "127.0.0.1", 0, clock=FakeClock(), max_body_size=64, max_header_size=512)
    server.start()
    yield server, handler
    server.stop(timeout=0)
    logging.getLogger("fiberapp.http").removeHandler(handler)
