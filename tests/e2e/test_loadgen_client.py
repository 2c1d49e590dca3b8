"""The load generator's HTTP client against raw scripted servers (port 0)."""
import gevent
import pytest
from gevent import socket
from gevent.server import StreamServer

from fiberapp.loadgen.client import Closed, Connection, Protocol, RequestTemplate


def scripted(replies):
    """A server answering each request (read up to the blank line, plus Content-Length)
    with the next scripted reply; b"CLOSE" closes the connection instead."""
    seen = []

    def handle(sock, addr):
        f = sock.makefile("rb")
        while replies:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            seen.append(head + f.read(length))
            reply = replies.pop(0)
            if reply == b"CLOSE":
                sock.close()
                return
            sock.sendall(reply)
            if b"Connection: close" in reply:
                sock.close()
                return

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server, seen


def test_keep_alive_chunked_and_close():
    server, seen = scripted([
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    ])
    try:
        conn = Connection(("127.0.0.1", server.server_port), timeout=5)
        post = RequestTemplate("POST", "/a", "h")
        assert conn.request(post.encode(b'{"k":1}')) == (200, b"hi")
        assert conn.connected  # keep-alive: the same socket serves the next request
        assert conn.request(RequestTemplate("GET", "/b", "h").encode()) == (200, b"abcde")
        assert conn.request(RequestTemplate("GET", "/c", "h").encode()) == (204, b"")
        assert conn.request(post.encode(b"{}")) == (201, b"x")
        assert not conn.connected  # the server said close
        assert seen[0] == b'POST /a HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"k":1}'
        assert seen[1] == b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    finally:
        server.stop()


def test_idle_close_is_retried_once_on_a_new_connection():
    server, seen = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"CLOSE",
                             b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2"])
    try:
        conn = Connection(("127.0.0.1", server.server_port), timeout=5)
        get = RequestTemplate("GET", "/", "h").encode()
        assert conn.request(get)[0] == 200
        assert conn.request(get) == (200, b"2")  # first try hit the closed socket
        assert len(seen) == 3
    finally:
        server.stop()


def test_garbage_and_mid_response_close_are_typed_errors():
    server, _ = scripted([b"NOT HTTP AT ALL\r\n\r\n"])
    try:
        conn = Connection(("127.0.0.1", server.server_port), timeout=5)
        with pytest.raises(Protocol):
            conn.request(RequestTemplate("GET", "/", "h").encode())
        assert not conn.connected
    finally:
        server.stop()
    server, _ = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"])
    try:
        conn = Connection(("127.0.0.1", server.server_port), timeout=5)
        with pytest.raises(Closed):
            conn.request(RequestTemplate("GET", "/", "h").encode())
    finally:
        server.stop()


def test_connect_refused_is_typed():
    from fiberapp.loadgen.client import ConnectFailed

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectFailed) as info:
        Connection(("127.0.0.1", port), timeout=2).request(b"GET / HTTP/1.1\r\n\r\n")
    assert info.value.kind == "connect"
    gevent.sleep(0)
