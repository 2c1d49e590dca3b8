"""A TCP proxy the tests can cut and restore: a database "going away" without touching
the shared server. Built on fiberapp.net.TcpServer."""
import socket

import gevent

from fiberapp.net import TcpServer


class Proxy:
    def __init__(self, runtime, upstream, port=0):
        """Forward 127.0.0.1:port (0: any free port) to upstream (host, port)."""
        self.upstream = upstream
        self.up = True
        self._socks = set()
        self.server = TcpServer(self._handle, "127.0.0.1", port, runtime=runtime, name="test-proxy", read_timeout=None)
        self.server.start()

    @property
    def port(self):
        return self.server.address[1]

    def _handle(self, stream):
        if not self.up:
            return  # accepted and closed at once: the "server" hangs up on every attempt
        client = stream.sock
        upstream = socket.create_connection(self.upstream)
        pair = {client, upstream}
        self._socks |= pair
        try:
            back = gevent.spawn(self._pump, upstream, client)
            self._pump(client, upstream)
            back.join()
        finally:
            self._socks -= pair
            upstream.close()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        """Drop every open connection and refuse (hang up on) new ones."""
        self.up = False
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self):
        self.up = True

    def stop(self):
        self.cut()
        self.server.stop(timeout=1)
