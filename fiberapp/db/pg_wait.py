"""psycopg's wait protocol served by gevent's event loop directly.

psycopg runs every libpq exchange as a generator that yields what it waits for (a
`Wait` mask: R, W or RW on the connection's socket) and expects to be sent back what is
ready (a `Ready` mask; `Ready.NONE` means "nothing yet, ask me again"). Under a patched
runtime psycopg consumes those generators with `waiting.wait_poll`: a Python loop over
gevent's emulated `select.poll`, which builds a poll object per call, wakes every
100 ms (the Ctrl-C interval) and runs its own bookkeeping per wake-up. On the bench
(bench/db.py) that was most of the client CPU per query.

`GeventConnection.wait` instead parks the fiber on one libev io watcher per wait and
gets the ready mask straight from the loop's callback (libev's READ/WRITE bits are the
same numbers as psycopg's R/W). No interval timer: a fiber waiting for a slow query
costs nothing until its socket is ready.

What is kept from psycopg's own waits, and how:
- A closed or broken socket still ends in `psycopg.OperationalError`: libev reports a
  hung-up or reset socket as readable, libpq's read then fails and psycopg raises, as
  with wait_poll. A wake-up that carries neither READ nor WRITE (libev's error bit) is
  checked with fstat() and raises OperationalError("connection socket closed"), as
  psycopg does for POLLERR/POLLHUP/POLLNVAL. A connection whose socket is already gone
  fails in `pgconn.socket` before any wait. The pool discards such connections.
- `timeout` (used by `Connection.notifies(timeout=...)`) raises psycopg's
  `_WaitTimeout` once the deadline passes, after sending the generator `Ready.NONE` as
  wait_poll does.
- Not kept: psycopg's Ctrl-C handling (on KeyboardInterrupt it cancels the running query
  in the server). Under the server, signals arrive through gevent.signal_handler, not as
  KeyboardInterrupt inside a query; a fiber killed mid-query (Cancelled, gevent.Timeout)
  leaves the connection ACTIVE and the pool discards it, exactly as before.
"""
import os

import psycopg
from gevent.hub import Waiter, get_hub
from psycopg import errors as e
from psycopg.rows import tuple_row

_READY_MASK = 3  # psycopg Ready.RW == libev EV_READ | EV_WRITE


def wait_on_loop(gen, fileno, timeout=None):
    """Drive psycopg generator `gen` on socket `fileno` until it returns; its value.

    The fiber sleeps on a libev io watcher for each yielded Wait mask; the watcher
    is reused while the mask stays the same (the usual case: one R wait per query)."""
    try:
        wait = next(gen)
        hub = get_hub()
        loop = hub.loop
        watcher = loop.io(fileno, wait)
        timer = None
        deadline = None
        if timeout is not None:
            deadline = loop.now() + timeout
        try:
            while True:
                waiter = Waiter(hub)
                watcher.start(waiter.switch, pass_events=True)
                if deadline is not None:
                    # The timer switches in 0 (Ready.NONE); the io callback switches in
                    # its event mask, which always has a bit set.
                    timer = loop.timer(max(0.0, deadline - loop.now()))
                    timer.start(waiter.switch, 0)
                try:
                    events = waiter.get()
                finally:
                    watcher.stop()
                    if timer is not None:
                        timer.close()
                        timer = None
                if not events:  # the deadline passed
                    gen.send(0)
                    raise e._WaitTimeout("wait timeout expired")
                ready = events & _READY_MASK
                if not ready:
                    _check_fd_closed(fileno)
                    raise e.OperationalError("connection socket closed")
                new_wait = gen.send(ready)
                if new_wait != wait:
                    watcher.close()
                    watcher = loop.io(fileno, new_wait)
                    wait = new_wait
        finally:
            watcher.close()
    except StopIteration as ex:
        return ex.value


def _check_fd_closed(fileno):
    try:
        os.fstat(fileno)
    except OSError as ex:
        raise e.OperationalError("connection socket closed") from ex


class GeventConnection(psycopg.Connection):
    """A psycopg Connection whose waits go straight to gevent's loop (wait_on_loop).

    Connecting (wait_conn, which may change the socket) stays psycopg's own."""

    _helper_cursor = None

    def helper_cursor(self, row_factory=tuple_row):
        """The one cursor the query helpers (pg_queries) reuse on this connection.

        psycopg's conn.execute() builds a Cursor per call; that cursor and its
        transformer and adapters map cost ~40 us of CPU per query on the bench
        (a third of a fast query), much of it in the garbage collector. One
        connection serves one fiber at a time, so one cursor per connection is safe;
        execute() resets it. Contract: the last result stays referenced until the
        next helper call on the connection (or until the connection is closed)."""
        cur = self._helper_cursor
        if cur is None or cur.closed:
            cur = self._helper_cursor = self.cursor(row_factory=row_factory)
        elif cur.row_factory is not row_factory:
            cur.row_factory = row_factory
        return cur

    def wait(self, gen, interval=0.1, timeout=None):  # interval: psycopg's Ctrl-C poll, unused
        return wait_on_loop(gen, self.pgconn.socket, timeout)
