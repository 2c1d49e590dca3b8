"""fiberapp.net.Stream's fast paths: raw send/recv on gevent sockets, wait-first reads and the
lazily re-armed read-timeout timer (driven here by hand, with a fake monotonic clock).

The protocol-level tests (framing, limits, TcpServer) are in tests/db/test_net.py."""
import gc
import socket
import weakref

import gevent
import pytest

from fiberapp import net
from fiberapp.net import ConnectionClosed, NetTimeout, Stream
from tests.waiting import wait_for

GUARD = 30  # seconds: only so that a regression fails instead of hanging


def fire(stream):
    """Run the stream's timer callback in the hub, as the loop would, and wait until it ran."""
    ran = []

    def callback():
        ran.append(True)
        stream._on_timer()

    gevent.get_hub().loop.run_callback(callback)
    wait_for(lambda: ran, what="the timer callback")


@pytest.fixture
def pair():
    """(Stream, peer socket) over loopback TCP; both gevent sockets (the suite is patched)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stream = net.connect(*listener.getsockname(), connect_timeout=2, read_timeout=30)
    peer, _ = listener.accept()
    listener.close()
    yield stream, peer
    stream.close()
    peer.close()


def test_requests_and_answers_go_through_the_raw_socket(pair):
    stream, peer = pair
    assert stream._raw is not None  # a gevent socket: the fast paths are in use
    for i in range(3):
        stream.write(b"ping %d\n" % i)
        assert peer.recv(64) == b"ping %d\n" % i
        peer.sendall(b"pong %d\n" % i)
        assert stream.read_line() == b"pong %d" % i
    assert stream._drained  # the last recv emptied the queue: the next read waits first


def test_a_write_larger_than_the_socket_buffer_completes(pair):
    stream, peer = pair
    data = bytes(range(256)) * 40_000  # ~10 MB: far more than one send() takes
    got = bytearray()

    def drain():
        while len(got) < len(data):
            chunk = peer.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    reader = gevent.spawn(drain)
    stream.write(data)
    reader.join(timeout=10)
    assert bytes(got) == data


def test_the_timeout_timer_rearms_until_the_deadline_then_times_out(pair, monkeypatch):
    stream, peer = pair
    now = [1000.0]
    monkeypatch.setattr(net, "monotonic", lambda: now[0])
    stream._drained = True  # wait before reading: the reader parks on the io watcher
    reader = gevent.spawn(stream.read_line)
    wait_for(lambda: stream._waiter is not None, what="the reader to wait")
    assert stream._deadline == 1030.0 and stream._timer is not None

    now[0] = 1010.0  # the timer fires early (it was armed by an earlier wait): re-arm
    fire(stream)
    assert stream._timer is not None and not reader.dead

    now[0] = 1030.0  # the deadline has passed: the waiting fiber gets NetTimeout
    fire(stream)
    with pytest.raises(NetTimeout):
        reader.get(timeout=2)
    assert stream._waiter is None


def test_a_timer_firing_between_reads_only_disarms(pair):
    stream, peer = pair
    peer.sendall(b"one\n")
    stream._drained = True
    assert stream.read_line() == b"one"  # waited once: the timer is armed
    assert stream._timer is not None
    fire(stream)  # nobody waits: nothing thrown, nothing re-armed
    assert stream._timer is None
    peer.sendall(b"two\n")
    assert stream.read_line() == b"two"  # the next wait arms it again
    assert stream._timer is not None


def test_closing_the_stream_under_a_waiting_reader_is_a_typed_error(pair):
    stream, peer = pair
    stream._drained = True
    reader = gevent.spawn(stream.read_line)
    wait_for(lambda: stream._waiter is not None, what="the reader to wait")
    stream.close()
    with pytest.raises(ConnectionClosed):
        reader.get(timeout=2)
    assert stream._timer is None


def test_a_plain_socket_uses_the_plain_calls():
    a, b = socket.socketpair()
    try:
        plain = Stream(a, read_timeout=5)
        plain._raw = None  # as for a socket that is not gevent's
        b.sendall(b"hello\n")
        assert plain.read_line() == b"hello"
        plain.write(b"back\n")
        assert b.recv(64) == b"back\n"
    finally:
        a.close()
        b.close()


def test_numeric_addresses_skip_name_resolution_and_names_still_resolve(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    resolved = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: resolved.append(a[0]) or real(*a, **kw))
    try:
        with net.connect("127.0.0.1", port, connect_timeout=2):
            pass
        assert resolved == []  # an IP literal: a plain connect, no getaddrinfo
        with net.connect("localhost", port, connect_timeout=2):
            pass
        assert resolved == [("localhost", port)]
        assert net._numeric_family("::1") == socket.AF_INET6
        assert net._numeric_family("db.example") is None
    finally:
        listener.close()


def test_a_refused_numeric_connect_is_typed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(net.ConnectFailed):
        net.connect("127.0.0.1", port, connect_timeout=1)


def test_a_shortened_read_timeout_rearms_the_timer_for_the_earlier_deadline(pair, monkeypatch):
    stream, peer = pair
    now = [1000.0]
    monkeypatch.setattr(net, "monotonic", lambda: now[0])
    peer.sendall(b"one\n")
    stream._drained = True
    assert stream.read_line() == b"one"  # a wait with read_timeout 30: timer due at 1030
    assert stream._due == 1030.0
    stream.read_timeout = 0.5
    now[0] = 1001.0
    reader = gevent.spawn(stream.read_line)
    wait_for(lambda: stream._waiter is not None, what="the reader to wait")
    assert stream._deadline == 1001.5
    assert stream._due == 1001.5  # not left at 1030: the old timer was replaced
    now[0] = 1001.5
    fire(stream)
    with pytest.raises(NetTimeout):
        reader.get(timeout=2)


def test_a_tls_socket_keeps_its_encryption(tmp_path):
    """A gevent SSLSocket also has _sock and _read_event; the raw fast path would send the
    plaintext on the TCP socket under it. Stream must use the TLS socket's own calls."""
    import ssl
    import subprocess

    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(crt), str(key))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            line = tls.recv(100)
            tls.sendall(b"pong\n")
            return line

    server = gevent.spawn(serve)
    tls = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()),
                                 server_hostname="localhost")
    with Stream(tls, read_timeout=5) as stream:
        assert stream._raw is None
        stream.write_line(b"ping")
        assert server.get(timeout=5) == b"ping\n"
        assert stream.read_line() == b"pong"
    listener.close()


def test_the_read_watcher_runs_from_wait_to_wait_and_stops_when_nobody_reads(pair):
    stream, peer = pair
    stream.write(b"ping\n")
    assert peer.recv(64) == b"ping\n"
    peer.sendall(b"pong\n")
    stream._drained = True
    assert stream.read_line() == b"pong"
    watcher = stream._watcher
    assert watcher is not None and watcher.active  # left running after the wait
    for i in range(3):  # request/answer: the same watcher, never stopped in between
        stream.write(b"ping\n")
        assert peer.recv(64) == b"ping\n"
        peer.sendall(b"pong %d\n" % i)
        assert stream.read_line() == b"pong %d" % i
        assert stream._watcher is watcher and watcher.active
    peer.sendall(b"unasked\n")  # readable with no reader: the watcher stops itself
    wait_for(lambda: not watcher.active, what="the watcher to stop")
    assert stream.read_line() == b"unasked"
    stream.close()
    assert stream._watcher is None


def test_a_whole_line_answer_skips_the_buffer_and_every_other_shape_reads_the_same(pair, monkeypatch):
    stream, peer = pair
    stream.max_line = 16

    def no_fill():
        raise AssertionError("a whole one-line answer went through the buffer")

    with monkeypatch.context() as m:
        m.setattr(stream, "_fill", no_fill)
        for sent, line in [(b"ok\n", b"ok"), (b"ok\r\n", b"ok"), (b"\n", b""), (b"\r\n", b""),
                           (b"x" * 16 + b"\n", b"x" * 16)]:
            peer.sendall(sent)
            assert stream.read_line() == line
    peer.sendall(b"one\ntwo\r\n")  # two lines at once: one by one, through the buffer
    assert stream.read_line() == b"one"
    assert stream.read_line() == b"two"
    peer.sendall(b"par")  # a line in pieces
    reader = gevent.spawn(stream.read_line)
    wait_for(lambda: stream._waiter is not None, what="the reader to wait for the rest")
    peer.sendall(b"tial\n")
    assert reader.get(timeout=5) == b"partial"
    peer.sendall(b"y" * 17 + b"\n")  # over max_line, in one piece
    with pytest.raises(net.FrameTooLarge):
        stream.read_line()
    stream._buf.clear()
    peer.close()
    assert stream.read_line() is None  # a clean end of stream


def test_a_stream_dropped_without_close_is_collected_and_closes_its_socket():
    """The running read watcher must not keep the Stream (and its fd) alive: a client a
    script forgets to close is collected as before, and the peer sees the end. (No
    read_timeout: a running timer holds the stream until it fires, as it always did.)"""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stream = net.connect(*listener.getsockname(), connect_timeout=2, read_timeout=None)
    peer, _ = listener.accept()
    listener.close()
    try:
        peer.sendall(b"a\n")
        stream._drained = True
        assert stream.read_line() == b"a"
        watcher = stream._watcher
        assert watcher is not None and watcher.active
        gone = weakref.ref(stream)
        del stream
        gc.collect()
        assert gone() is None
        assert not watcher.active  # closed by the finalizer
        peer.settimeout(GUARD)
        assert peer.recv(10) == b""  # the socket was closed with the stream
    finally:
        peer.close()


def test_an_idle_stream_does_not_keep_the_loop_alive(pair):
    """Between reads the watcher runs unreferenced: with nothing else to do the loop
    ends (gevent.wait returns) instead of waiting for the idle connection for ever."""
    stream, peer = pair
    peer.sendall(b"a\n")
    stream._drained = True
    assert stream.read_line() == b"a"
    assert stream._watcher.active
    assert gevent.wait(timeout=GUARD) is True  # returned because the loop emptied


def test_reading_a_closed_stream_is_a_typed_error(pair):
    stream, peer = pair
    stream._drained = True  # the next read waits for the socket first
    stream.close()
    with pytest.raises(ConnectionClosed, match="closed"):
        stream.read_line()
