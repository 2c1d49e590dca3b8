"""Noticing that a client has hung up while its request's handler runs.

The connection's fiber is inside the handler, not reading, so two cheap tools:
peer_gone(sock) peeks one byte without blocking (EOF or an error: gone; data or
nothing yet: there), and DisconnectWatch puts an io watcher on the socket that peeks
when it becomes readable. Pipelined bytes stay queued in the kernel for the read loop.
"""
import socket as _socket

import gevent

_PEEK = _socket.MSG_PEEK | _socket.MSG_DONTWAIT


def peer_gone(sock):
    """True if the peer closed (EOF) or reset the connection. Never blocks."""
    try:
        data = sock._sock.recv(1, _PEEK)  # the raw socket: gevent's recv would wait on EAGAIN
    except BlockingIOError:
        return False
    except OSError:
        return True
    return not data


class DisconnectWatch:
    """An io watcher on the client socket, live while one handler runs.

    On readability it peeks: EOF or an error means the client is gone (fn() runs, once);
    data means the client pipelined more requests, which proves it is there, so the watch
    stops (the watcher is level-triggered and the data stays queued for the loop).
    """

    __slots__ = ("conn", "fn", "watcher", "fired")

    def __init__(self, conn, fn):
        self.conn = conn
        self.fn = fn
        self.watcher = None
        self.fired = False

    def start(self):
        if self.conn.peer_gone():
            self._fire()
            return
        self.watcher = gevent.get_hub().loop.io(self.conn.sock.fileno(), 1)
        self.watcher.start(self._readable)

    def _readable(self):
        gone = self.conn.peer_gone()
        self.cancel()
        if gone:
            self._fire()

    def _fire(self):
        if not self.fired:
            self.fired = True
            self.fn()

    def cancel(self):
        w = self.watcher
        if w is not None:
            self.watcher = None
            w.stop()
            w.close()
