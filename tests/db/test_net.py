"""fiberapp.net: TCP server and client helpers, framing, limits, graceful stop."""
import socket
import struct

import gevent
import gevent.event
import pytest

from fiberapp.net import ConnectFailed, ConnectionClosed, FrameTooLarge, NetTimeout, TcpServer, connect
from tests.db.conftest import wait_for


@pytest.fixture
def serve(runtime):
    servers = []

    def start(handler, **kw):
        server = TcpServer(handler, "127.0.0.1", 0, runtime=runtime, **kw).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout=1)


def upper_lines(stream):
    while (line := stream.read_line()) is not None:
        stream.write_line(line.upper())


def test_lines_round_trip_and_fiber_named_after_peer(serve, runtime):
    server = serve(upper_lines, name="upper")
    with connect(*server.address, connect_timeout=2, read_timeout=2) as client:
        client.write(b"hello\r\nwor")  # CRLF is accepted; a line may arrive in pieces
        client.write(b"ld\n")
        assert client.read_line() == b"HELLO"
        assert client.read_line() == b"WORLD"
        local = "%s:%s" % client.sock.getsockname()[:2]
        assert f"upper:{local}" in [f.name for f in runtime.fibers()]
        assert server.connections == 1
    wait_for(lambda: server.connections == 0, what="the handler to end")


def test_frames_round_trip(serve):
    def echo_frames(stream):
        while (frame := stream.read_frame()) is not None:
            stream.write_frame(frame[::-1])

    server = serve(echo_frames)
    with connect(*server.address) as client:
        for payload in (b"", b"abc", bytes(range(256)) * 1000):
            client.write_frame(payload)
            assert client.read_frame() == payload[::-1]


def test_limits_and_truncation_are_typed_errors(serve):
    seen = []

    def record(stream):
        try:
            seen.append(stream.read_frame())
        except Exception as exc:
            seen.append(exc)

    server = serve(record, max_frame=100)
    with connect(*server.address) as client:
        client.write(struct.pack(">I", 101) + b"x" * 101)  # one byte over the limit
        wait_for(lambda: seen, what="the handler")
    with connect(*server.address) as client:
        client.write(struct.pack(">I", 10) + b"abc")  # then hangs up mid-frame
    wait_for(lambda: len(seen) == 2, what="the second handler")
    assert isinstance(seen[0], FrameTooLarge) and isinstance(seen[1], ConnectionClosed)


def test_line_limit(serve):
    server = serve(lambda stream: stream.write(b"short\n" + b"x" * 20 + b"\n"))
    with connect(*server.address, max_line=8) as client:
        assert client.read_line() == b"short"
        with pytest.raises(FrameTooLarge):
            client.read_line()


def test_read_timeout(serve):
    release = gevent.event.Event()
    server = serve(lambda stream: release.wait(5))
    with connect(*server.address, read_timeout=0.05) as client:
        with pytest.raises(NetTimeout):
            client.read_line()
    release.set()


def test_connect_failures_are_typed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectFailed):
        connect("127.0.0.1", port, connect_timeout=1)


def test_handler_errors_do_not_stop_the_server(serve):
    def fragile(stream):
        if stream.read_line() == b"boom":
            raise ValueError("handler bug")
        stream.write_line("fine")

    server = serve(fragile)
    with connect(*server.address) as client:
        client.write_line("boom")
        assert client.read_line() is None  # the server closed that connection
    with connect(*server.address) as client:
        client.write_line("ok")
        assert client.read_line() == b"fine"
    assert server.handler_errors == 1


def test_full_server_stops_accepting_until_a_slot_frees(serve):
    server = serve(upper_lines, max_connections=2)
    first, second = connect(*server.address), connect(*server.address)
    for c in (first, second):
        c.write_line("x")
        assert c.read_line() == b"X"
    third = connect(*server.address)  # the kernel completes the handshake (backlog) ...
    third.write_line("waiting")
    gevent.idle()  # let every ready fiber and pending I/O run: no handler may pick it up
    gevent.idle()
    assert server.accepted == 2 and server.connections == 2
    first.close()
    assert third.read_line() == b"WAITING"  # served once a slot was free
    assert server.accepted == 3
    second.close()
    third.close()


def test_graceful_stop_lets_handlers_finish_then_cancels(runtime):
    finished = []
    proceed = gevent.event.Event()

    def polite(stream):
        stream.read_line()
        proceed.wait(5)
        finished.append(stream.peer)

    def stubborn(stream):
        stream.read_line()
        gevent.event.Event().wait()  # never ends by itself

    polite_server = TcpServer(polite, runtime=runtime, name="polite").start()
    client = connect(*polite_server.address)
    client.write_line("go")
    wait_for(lambda: polite_server.connections == 1, what="the handler")
    gevent.spawn_later(0.02, proceed.set)
    assert polite_server.stop(timeout=5) == 0
    assert len(finished) == 1
    with pytest.raises(ConnectFailed):
        connect(*client.sock.getpeername()[:2], connect_timeout=1)  # no longer listening
    client.close()

    stubborn_server = TcpServer(stubborn, runtime=runtime, name="stubborn").start()
    client = connect(*stubborn_server.address)
    client.write_line("go")
    wait_for(lambda: stubborn_server.connections == 1, what="the handler")
    assert stubborn_server.stop(timeout=0.05) == 1
    assert stubborn_server.connections == 0
    assert client.read_line() is None  # the cancelled handler's connection was closed
    client.close()
