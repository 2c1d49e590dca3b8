"""The HTTP client against our own server: pooling, timeouts, errors."""
import socket

import gevent
import gevent.event
import pytest

from fiberapp.http import HTTPClient, HTTPClientConnectionError, HTTPClientTimeout, Router
from fiberapp.http import HTTPServer


@pytest.fixture
def server():
    # A real clock here: the client's timeouts are socket timeouts.
    r = Router()
    r.add("GET", "/peer", lambda req: {"port": req.remote_addr[1]})
    r.add("POST", "/json", lambda req: {"got": req.json()})
    hold = gevent.event.Event()
    r.add("GET", "/hang", lambda req: hold.wait(10) and "late")
    srv = HTTPServer(r, "127.0.0.1", 0)
    srv.start()
    yield srv
    hold.set()
    srv.stop(timeout=1)


def url(server, path):
    return "http://%s:%d%s" % (*server.address, path)


def test_keep_alive_pooling_reuses_one_connection(server):
    with HTTPClient(timeout=5) as client:
        ports = {client.get(url(server, "/peer")).json()["port"] for _ in range(5)}
        assert len(ports) == 1
        assert server.stats()["connections"] == 1


def test_concurrent_requests_use_at_most_pool_size_connections(server):
    with HTTPClient(timeout=5, pool_size=2) as client:
        jobs = [gevent.spawn(client.get, url(server, "/peer")) for _ in range(10)]
        ports = {job.get(timeout=10).json()["port"] for job in jobs}
        assert 1 <= len(ports) <= 2


def test_json_round_trip_and_headers(server):
    with HTTPClient(timeout=5) as client:
        resp = client.post(url(server, "/json"), json={"a": [1, 2]})
        assert resp.status == 200 and resp.json() == {"got": {"a": [1, 2]}}
        assert resp.headers["content-type"] == "application/json"
        assert client.get(url(server, "/nope")).status == 404


def test_timeout_is_mandatory():
    for bad in (None, 0, -1):
        with pytest.raises(ValueError):
            HTTPClient(timeout=bad)


def test_a_slow_server_raises_the_timeout(server):
    # Real time: the timeout must pass once (kept at 1 s so a loaded machine does not
    # make the follow-up request time out too).
    with HTTPClient(timeout=1.0) as client:
        with pytest.raises(HTTPClientTimeout):
            client.get(url(server, "/hang"))
        assert client.get(url(server, "/peer")).status == 200  # the pool recovered


def test_connection_refused_is_a_typed_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with HTTPClient(timeout=2) as client:
        with pytest.raises(HTTPClientConnectionError):
            client.get(f"http://127.0.0.1:{port}/")
    with pytest.raises(ValueError):
        HTTPClient(timeout=1).get("ftp://example/")
