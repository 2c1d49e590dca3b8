"""fiberapp.db.pg_wait: psycopg's wait protocol on gevent's loop (the other pool tests,
statement timeout, pg_terminate_backend and the cut proxy among them, run through it too)."""
import os
import socket

import gevent
import psycopg
import pytest
from psycopg import errors as e
from psycopg.waiting import Ready, Wait

from fiberapp.db.errors import DbUnavailable, QueryError
from fiberapp.db.pg_wait import GeventConnection, wait_on_loop


def _recorder(waits, sent):
    """A psycopg-style generator: yields each Wait mask in turn, records what it was sent."""
    for wait in waits:
        sent.append((yield wait))
    return "done"


def test_ready_masks_come_back_from_the_loop():
    a, b = socket.socketpair()
    try:
        sent = []
        # An idle socket is writable at once; readable only after the peer writes.
        gevent.spawn_later(0, b.send, b"x")
        assert wait_on_loop(_recorder([Wait.W, Wait.R, Wait.RW], sent), a.fileno()) == "done"
        assert sent[:2] == [Ready.W, Ready.R]
        assert sent[2] == Ready.RW  # data waiting and room to write
    finally:
        a.close()
        b.close()


def test_a_wait_yields_to_other_fibers_until_the_socket_is_ready():
    a, b = socket.socketpair()
    try:
        log = []

        def peer():
            log.append("peer runs")
            b.send(b"x")

        gevent.spawn(peer)
        sent = []
        assert wait_on_loop(_recorder([Wait.R], sent), a.fileno()) == "done"
        assert log == ["peer runs"] and sent == [Ready.R]
    finally:
        a.close()
        b.close()


def test_a_peer_hanging_up_wakes_the_reader():
    a, b = socket.socketpair()
    try:
        gevent.spawn(b.close)
        sent = []
        wait_on_loop(_recorder([Wait.R], sent), a.fileno())
        assert sent == [Ready.R]  # EOF is readable: libpq's read then reports the loss
        assert a.recv(1) == b""
    finally:
        a.close()


def test_timeout_sends_ready_none_then_raises_wait_timeout():
    a, b = socket.socketpair()
    try:
        sent = []
        gen = _recorder([Wait.R, Wait.R], sent)
        with pytest.raises(e._WaitTimeout):
            wait_on_loop(gen, a.fileno(), timeout=0)
        assert sent == [Ready.NONE]
    finally:
        a.close()
        b.close()


def test_a_fiber_killed_while_waiting_leaves_no_watcher_behind():
    a, b = socket.socketpair()
    try:
        waiter = gevent.spawn(wait_on_loop, _recorder([Wait.R], []), a.fileno())
        gevent.sleep(0)  # let it park on the watcher
        waiter.kill()
        assert waiter.dead and isinstance(waiter.value, gevent.GreenletExit)
        # The fd is free for a new wait (a leftover active watcher would fire into a dead fiber).
        b.send(b"x")
        sent = []
        wait_on_loop(_recorder([Wait.R], sent), a.fileno())
        assert sent == [Ready.R]
    finally:
        a.close()
        b.close()


def test_notifies_timeout_and_delivery_on_a_gevent_connection(pg_dsn):
    with GeventConnection.connect(pg_dsn, autocommit=True) as conn, psycopg.connect(pg_dsn, autocommit=True) as other:
        conn.execute("LISTEN fiberapp_pg_wait")
        assert list(conn.notifies(timeout=0)) == []  # the deadline passes at once
        other.execute("NOTIFY fiberapp_pg_wait, 'hello'")
        got = list(conn.notifies(timeout=10, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [("fiberapp_pg_wait", "hello")]


def test_a_socket_shut_down_under_the_pool_is_unavailable_and_discarded(pg, runtime):
    with pg.connection() as conn:
        pid = conn.info.backend_pid
        # Break the TCP connection under libpq (shutdown acts on the shared socket; only
        # our dup of the fd is closed, libpq's own stays valid).
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
        dup.shutdown(socket.SHUT_RDWR)
        dup.close()
    with pytest.raises(DbUnavailable):  # one connection so far: the pool hands out the broken one
        pg.fetch_val("SELECT pg_backend_pid()")
    pids = {pg.fetch_val("SELECT pg_backend_pid()") for _ in range(5)}
    assert pid not in pids
    assert pg.health()["status"] == "ok"


def test_helpers_reuse_one_cursor_per_connection_across_row_factories(pg, runtime):
    with pg.connection() as conn:
        cursor = conn.helper_cursor()
    # Sequential calls get the same (only) connection; tuple and dict rows alternate
    # on its one cursor, and an error in between leaves it usable.
    assert pg.fetch_one("SELECT 1 AS a, 'x' AS b") == {"a": 1, "b": "x"}
    assert pg.fetch_val("SELECT 2") == 2
    with pytest.raises(QueryError) as info:
        pg.fetch_val("SELECT 1/0")
    assert info.value.sqlstate == "22012"  # division_by_zero
    assert pg.fetch_all("SELECT g AS n FROM generate_series(1, 3) g") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert pg.fetch_val("SELECT 'after'") == "after"
    assert pg.execute("SELECT 1 UNION ALL SELECT 2") == 2
    with pg.connection() as conn:
        assert conn.helper_cursor() is cursor and not cursor.closed
