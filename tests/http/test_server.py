"""The server over real sockets on port 0: framing, keep-alive, limits, timeouts (on a
FakeClock), backpressure, errors, disconnect detection, graceful stop, metrics."""
import logging
import socket

import gevent
import gevent.event
import gevent.monkey
import pytest

from fiberapp.http import ClientDisconnected, HTTPConfig, HTTPServer, Response, Router

from .helpers import RawClient, get, wait_for


@pytest.fixture
def app():
    r = Router()
    r.add("GET", "/hello", lambda req: "hello")
    r.add("GET", "/items/{id:int}", lambda req: {"id": req.params["id"]})
    r.add("POST", "/echo", lambda req: req.body)
    r.add("GET", "/nothing", lambda req: None)

    def boom(req):
        raise RuntimeError("handler bug")

    r.add("GET", "/boom", boom)
    return r


def test_start_binds_port_zero_and_is_ready(serve, app, connect):
    server = serve(app)
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    c = connect(server)
    c.send(get("/hello"))
    resp = c.read_response()
    assert resp["status"] == 200 and resp["body"] == b"hello"
    assert resp["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert "date" in resp["headers"]


def test_nodelay_is_set_on_accepted_sockets(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(get("/hello"))
    c.read_response()
    (conn,) = server._connections
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_pipelined_requests_are_answered_in_order(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(b"".join([get("/items/1"), b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                     get("/items/2"), get("/nothing"), get("/missing"), get("/items/3")]))
    got = [c.read_response() for _ in range(6)]
    assert [r["status"] for r in got] == [200, 200, 200, 204, 404, 200]
    assert [r["body"] for r in got] == [b'{"id":1}', b"abc", b'{"id":2}', b"", got[4]["body"], b'{"id":3}']


def test_pipelined_requests_split_across_packets(serve, app, connect):
    server = serve(app)
    c = connect(server)
    data = get("/items/7") + get("/items/8")
    for i in range(0, len(data), 5):  # requests cut at arbitrary points
        c.send(data[i:i + 5])
    assert [c.read_response()["body"] for _ in range(2)] == [b'{"id":7}', b'{"id":8}']


def test_chunked_request_body(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    c.send(b"1\r\n \r\n")
    c.send(b"5\r\nworld\r\n0\r\n\r\n")
    resp = c.read_response()
    assert resp["status"] == 200 and resp["body"] == b"hello world"


def test_expect_100_continue(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert c.read_raw(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.send(b"data")
    resp = c.read_response()
    assert resp["status"] == 200 and resp["body"] == b"data"


def test_expect_100_continue_with_an_oversize_body_gets_413_not_100(serve, app, connect):
    server = serve(app, max_body_size=10)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    resp = c.read_response()
    assert resp["status"] == 413
    assert c.closed_by_peer()


def test_keep_alive_then_connection_close(serve, app, connect):
    server = serve(app)
    c = connect(server)
    for i in range(3):
        c.send(get(f"/items/{i}"))
        resp = c.read_response()
        assert resp["status"] == 200 and "connection" not in resp["headers"]
    c.send(get("/items/9", b"Connection: close\r\n"))
    resp = c.read_response()
    assert resp["headers"]["connection"] == "close"
    assert c.closed_by_peer()


def test_http_1_0_closes_unless_keep_alive_asked(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(get("/hello", version=b"1.0"))
    resp = c.read_response()
    assert resp["status"] == 200 and resp["headers"]["connection"] == "close"
    assert c.closed_by_peer()
    c = connect(server)
    c.send(get("/hello", b"Connection: keep-alive\r\n", version=b"1.0"))
    assert c.read_response()["headers"]["connection"] == "keep-alive"
    c.send(get("/items/5", b"Connection: keep-alive\r\n", version=b"1.0"))
    assert c.read_response()["body"] == b'{"id":5}'


def test_head_sends_headers_only(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(b"HEAD /hello HTTP/1.1\r\n\r\n" + get("/items/1"))
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b'{"id":1}'):
        data += c.read_raw()
    head, rest = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 5" in head
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body after the HEAD response


def test_huge_headers_get_431_and_close(serve, app, connect):
    server = serve(app, max_header_size=1024)
    c = connect(server)
    c.send(b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert c.read_response()["status"] == 431
    assert c.closed_by_peer()
    c = connect(server)  # many small headers count too
    c.send(b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n")
    assert c.read_response()["status"] == 431
    c = connect(server)  # and a huge request line
    c.send(get("/" + "x" * 2000))
    assert c.read_response()["status"] == 431


def test_huge_body_gets_413_and_close(serve, app, connect):
    server = serve(app, max_body_size=100)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n")
    resp = c.read_response()
    assert resp["status"] == 413 and resp["headers"]["connection"] == "close"
    assert c.closed_by_peer()
    c = connect(server)  # a chunked body has no declared length: counted as it arrives
    c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    c.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert c.read_response()["status"] == 413
    assert c.closed_by_peer()
    c = connect(server)  # at the limit is fine
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"y" * 100)
    assert c.read_response()["body"] == b"y" * 100


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_garbage_gets_400_and_close(serve, app, connect, garbage):
    server = serve(app)
    c = connect(server)
    c.send(garbage)
    assert c.read_response()["status"] == 400
    assert c.closed_by_peer()
    c = connect(server)  # the server is fine
    c.send(get("/hello"))
    assert c.read_response()["status"] == 200


def test_garbage_after_good_pipelined_requests(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(get("/items/1") + b"\x00junk\r\n\r\n")
    assert c.read_response()["status"] == 200
    assert c.read_response()["status"] == 400
    assert c.closed_by_peer()


def test_non_utf8_path_is_400(serve, app, connect):
    server = serve(app)
    c = connect(server)
    c.send(get("/items/%ff"))
    assert c.read_response()["status"] == 400


def test_a_raising_handler_gives_500_and_the_connection_and_server_live_on(serve, app, connect, caplog):
    server = serve(app)
    c = connect(server)
    c.send(get("/boom"))
    assert c.read_response()["status"] == 500
    assert "handler bug" in caplog.text
    c.send(get("/hello"))
    assert c.read_response()["body"] == b"hello"


def test_an_unsendable_response_is_a_500(serve, connect, caplog):
    r = Router()
    r.add("GET", "/badstatus", lambda req: Response(b"x", 1234))
    r.add("GET", "/badheader", lambda req: Response(b"x", 200, [("X-Name", "caf\u00e9\u2603")]))
    server = serve(r)
    c = connect(server)
    c.send(get("/badstatus") + get("/badheader"))
    assert [c.read_response()["status"] for _ in range(2)] == [500, 500]
    assert "unsendable response" in caplog.text


def test_a_client_that_does_not_read_is_cut_off_by_the_send_timeout(serve, connect, clock):
    big = b"x" * (32 * 1024 * 1024)
    r = Router()
    r.add("GET", "/big", lambda req: big)
    server = serve(r, send_timeout=10)
    c = connect(server)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(get("/big"))
    wait_for(lambda: server.stats()["states"]["sending"] == 1)
    clock.advance(11)
    wait_for(lambda: server.stats()["connections"] == 0)


def test_a_plain_function_app_is_wrapped():
    server = HTTPServer(lambda req: {"path": req.path}, "127.0.0.1", 0)
    server.start()
    try:
        c = RawClient(server.address)
        c.send(get("/anything"))
        assert c.read_response()["body"] == b'{"path":"/anything"}'
        c.close()
    finally:
        server.stop(timeout=0)


# -- timeouts, all on the FakeClock ------------------------------------------------------

def test_slow_headers_are_cut_off_by_the_header_timeout(serve, app, connect, clock):
    server = serve(app, header_timeout=5, idle_timeout=60)
    c = connect(server)
    c.send(b"GET /hello HTTP/1.1\r\n")
    wait_for(lambda: server.stats()["states"]["headers"] == 1)
    clock.advance(3)
    c.send(b"X-A: 1\r\n")  # trickling bytes does not extend the deadline
    clock.advance(1.5)
    assert c.nothing_pending()
    clock.advance(1)
    assert c.closed_by_peer()
    wait_for(lambda: server.stats()["connections"] == 0)


def test_a_silent_new_connection_is_closed_by_the_header_timeout(serve, app, connect, clock):
    server = serve(app, header_timeout=5, idle_timeout=60)
    c = connect(server)
    wait_for(lambda: server.stats()["connections"] == 1)
    clock.advance(5.5)
    assert c.closed_by_peer()


def test_idle_keep_alive_connections_are_closed(serve, app, connect, clock):
    server = serve(app, header_timeout=5, idle_timeout=30)
    c = connect(server)
    c.send(get("/hello"))
    c.read_response()
    clock.advance(20)  # past the header timeout: idle connections get idle_timeout
    c.send(get("/hello"))
    assert c.read_response()["status"] == 200
    clock.advance(29)
    assert c.nothing_pending()
    clock.advance(2)
    assert c.closed_by_peer()


def test_slow_body_is_cut_off(serve, app, connect, clock):
    server = serve(app, body_timeout=10)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    wait_for(lambda: server.stats()["states"]["body"] == 1)
    clock.advance(11)
    assert c.closed_by_peer()


def test_a_long_handler_is_not_subject_to_timeouts(serve, connect, clock):
    release = gevent.event.Event()
    r = Router()
    r.add("GET", "/slow", lambda req: release.wait(10) and "done")
    server = serve(r, header_timeout=1, idle_timeout=1)
    c = connect(server)
    c.send(get("/slow"))
    wait_for(lambda: server.stats()["states"]["handler"] == 1)
    clock.advance(100)
    release.set()
    assert c.read_response()["body"] == b"done"


# -- backpressure --------------------------------------------------------------------

def test_a_full_pool_stops_accepting(serve, app, connect):
    server = serve(app, max_connections=2)
    c1, c2 = connect(server), connect(server)
    for c in (c1, c2):
        c.send(get("/hello"))
        assert c.read_response()["status"] == 200
    assert server.stats()["accepting"] is False
    c3 = connect(server)  # the kernel completes the handshake (backlog), nobody serves it
    c3.send(get("/hello"))
    assert c3.nothing_pending()
    assert server.stats()["connections"] == 2
    c1.close()
    assert c3.read_response()["status"] == 200  # served as soon as a slot frees up
    wait_for(lambda: server.stats()["connections"] == 2)


def test_clients_arriving_together_are_all_accepted_in_one_wake_up(serve, app, monkeypatch):
    """gevent accepts at most 100 per listener wake-up by default; under load every busy
    connection is served between wake-ups, so the 1,000th of a burst waited ten loop
    iterations. The server accepts all that is pending (up to the backlog) at once."""
    server = serve(app)
    loop = server._server.loop
    iterations = []  # the loop iteration in which each accept happened
    real = server._server.do_read
    monkeypatch.setattr(server._server, "do_read", lambda: iterations.append(loop.iteration) or real())
    plain_socket = gevent.monkey.get_original("socket", "socket")
    clients = []
    try:
        for _ in range(300):  # blocking, unpatched connects: the loop cannot run meanwhile
            s = plain_socket()
            s.connect(server.address)
            clients.append(s)
        wait_for(lambda: len(server._connections) == 300, what="every client accepted")
        assert len(set(iterations)) == 1  # one wake-up of the listener took them all
    finally:
        for s in clients:
            s.close()


# -- the client going away -------------------------------------------------------------

def test_cancel_on_disconnect_interrupts_a_waiting_handler(serve, connect):
    entered, outcome = gevent.event.Event(), gevent.event.AsyncResult()
    never = gevent.event.Event()

    def long_poll(req):
        watch = req.cancel_on_disconnect()
        entered.set()
        try:
            never.wait(30)
            outcome.set("timed out")
        except ClientDisconnected:
            outcome.set("cancelled")
            raise
        finally:
            watch.cancel()

    r = Router()
    r.add("GET", "/take", long_poll)
    server = serve(r)
    c = connect(server)
    c.send(get("/take"))
    entered.wait(5)
    c.close()
    assert outcome.get(timeout=5) == "cancelled"
    wait_for(lambda: server.stats()["connections"] == 0)


def test_disconnected_and_on_disconnect(serve, connect):
    entered, go = gevent.event.Event(), gevent.event.Event()
    seen, notified = [], gevent.event.Event()

    def handler(req):
        seen.append(req.disconnected())
        req.on_disconnect(notified.set)
        entered.set()
        go.wait(10)
        seen.append(req.disconnected())
        return "late"

    r = Router()
    r.add("GET", "/wait", handler)
    server = serve(r)
    c = connect(server)
    c.send(get("/wait"))
    entered.wait(5)
    c.close()
    assert notified.wait(5)
    go.set()
    wait_for(lambda: len(seen) == 2)
    assert seen == [False, True]
    wait_for(lambda: server.stats()["connections"] == 0)


def test_pipelined_data_is_not_mistaken_for_a_disconnect(serve, connect):
    entered, go = gevent.event.Event(), gevent.event.Event()
    seen = []

    def handler(req):
        req.on_disconnect(lambda: seen.append("gone"))
        entered.set()
        go.wait(10)
        seen.append(req.disconnected())
        return "first"

    r = Router()
    r.add("GET", "/wait", handler)
    r.add("GET", "/next", lambda req: "second")
    server = serve(r)
    c = connect(server)
    c.send(get("/wait"))
    entered.wait(5)
    c.send(get("/next"))
    assert c.nothing_pending()
    go.set()
    assert [c.read_response()["body"] for _ in range(2)] == [b"first", b"second"]
    assert seen == [False]


# -- graceful stop ----------------------------------------------------------------------

def test_stop_closes_idle_connections_and_lets_in_flight_requests_finish(serve, connect, clock):
    entered, release = gevent.event.Event(), gevent.event.Event()
    r = Router()
    r.add("GET", "/slow", lambda req: entered.set() or release.wait(10) and "finished")
    r.add("GET", "/fast", lambda req: "fast")
    server = serve(r)
    idle, busy = connect(server), connect(server)
    idle.send(get("/fast"))
    idle.read_response()
    busy.send(get("/slow"))
    entered.wait(5)
    stopper = gevent.spawn(server.stop, 30)
    assert idle.closed_by_peer()  # closed at once
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2)  # no longer accepting
    assert not stopper.dead
    release.set()
    resp = busy.read_response()
    assert resp["body"] == b"finished" and resp["headers"]["connection"] == "close"
    assert busy.closed_by_peer()
    stopper.get(timeout=5)


def test_stop_kills_what_is_still_running_at_the_deadline(serve, connect, clock):
    entered = gevent.event.Event()
    r = Router()
    r.add("GET", "/stuck", lambda req: entered.set() or gevent.event.Event().wait(60))
    server = serve(r)
    c = connect(server)
    c.send(get("/stuck"))
    entered.wait(5)
    stopper = gevent.spawn(server.stop, 10)
    wait_for(lambda: server.stopping)  # stop() arms its deadline timer in the same step
    clock.advance(9)
    assert not stopper.dead
    clock.advance(2)
    stopper.get(timeout=5)
    assert c.closed_by_peer()
    assert server.stats()["connections"] == 0


# -- metrics and access log --------------------------------------------------------------

def test_metrics_per_route_and_status(serve, app, connect, registry):
    server = serve(app)
    c = connect(server)
    for path in ("/items/1", "/items/2", "/missing", "/boom", "/hello"):
        c.send(get(path))
        c.read_response()

    def count(route, status, method="GET"):
        return registry.get_sample_value("fiberapp_http_requests_total",
                                         {"route": route, "method": method, "status": status})

    assert count("/items/{id:int}", "200") == 2
    assert count("<unmatched>", "404") == 1
    assert count("/boom", "500") == 1
    assert count("/hello", "200") == 1
    assert registry.get_sample_value("fiberapp_http_request_duration_seconds_count",
                                     {"route": "/items/{id:int}", "method": "GET"}) == 2


def test_access_log(serve, app, connect, caplog):
    server = serve(app, access_log=True)
    c = connect(server)
    with caplog.at_level(logging.INFO, logger="fiberapp.http.access"):
        c.send(get("/items/4"))
        c.read_response()
    assert any("GET /items/4 200" in rec.getMessage() for rec in caplog.records)


def test_config_validation():
    with pytest.raises(ValueError):
        HTTPConfig(max_body_size=0)
    with pytest.raises(ValueError):
        HTTPConfig(idle_timeout=-1)
    with pytest.raises(ValueError):
        HTTPConfig.from_mapping({"max_header_size": 100, "colour": "blue"})
    assert HTTPConfig.from_mapping({"max_connections": 5}).max_connections == 5


def test_connections_can_be_runtime_fibers(clock):
    from fiberapp.runtime.fiber import Runtime

    runtime = Runtime(clock=clock)
    r = Router()
    r.add("GET", "/who", lambda req: gevent.getcurrent().name)
    server = HTTPServer(r, "127.0.0.1", 0, clock=clock, runtime=runtime, max_connections=1)
    server.start()
    try:
        c = RawClient(server.address)
        c.send(get("/who"))
        assert c.read_response()["body"] == b"http.conn"
        assert [f.name for f in runtime.fibers()].count("http.conn") == 1
        assert server.stats()["accepting"] is False  # still bounded
        c.close()
        wait_for(lambda: "http.conn" not in [f.name for f in runtime.fibers()])
    finally:
        server.stop(timeout=0)


def test_a_client_still_sending_an_oversize_body_reads_the_413(serve, app, connect):
    server = serve(app, max_body_size=1000)
    c = connect(server)
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 300000\r\n\r\n")
    sent = 0
    try:
        for _ in range(30):  # keep sending, as a client that does not wait for a reply would
            c.send(b"z" * 10000)
            sent += 10000
    except OSError:
        pass
    resp = c.read_response()
    assert resp["status"] == 413
    assert c.closed_by_peer()


def test_lingering_after_an_error_is_bounded_by_the_clock(serve, app, connect, clock):
    server = serve(app)
    c = connect(server)
    c.send(b"\x00garbage\r\n\r\n")
    assert c.read_response()["status"] == 400
    assert c.closed_by_peer()  # the server half-closed; our socket stays open
    assert server.stats()["connections"] == 1  # still discarding what we might send
    clock.advance(2.5)
    wait_for(lambda: server.stats()["connections"] == 0)


def test_an_endless_header_line_is_cut_off_without_buffering_it_all(serve, app, connect):
    server = serve(app, max_header_size=1024)
    c = connect(server)
    c.send(b"GET /hello HTTP/1.1\r\nX-Endless: ")
    sent = 0
    try:
        while sent < 8 * 1024 * 1024:  # no CRLF ever: httptools would keep buffering
            c.send(b"a" * 16384)
            sent += 16384
    except OSError:
        pass  # the server answered and stopped reading
    assert c.read_response()["status"] == 431
    assert sent < 8 * 1024 * 1024 or c.closed_by_peer()
